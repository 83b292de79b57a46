"""The hostile-input corpus: each case is a command line (plus, optionally, damaged inputs made in the
case's tmp dir) and a piece of the one-line error it must give. `check_case` asserts the promise the
README makes for bad input: exit code 2, at most 3 lines on stderr, no traceback, a message that names
the problem, and no file that existed before the command changed.

Argument placeholders, filled by `check_case`: {tmp} the case's own tmp dir, and every name in `places`
(the shared fixtures of conftest.py: {ae} and {gan} tiny trained runs, {digits} a small .npz, ...).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from genlab.cli import main

MAX_STDERR_LINES = 3


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: str  # a substring of the error message
    setup: Callable[[Path, dict[str, Path]], None] | None = None  # (tmp, places): makes damaged inputs
    absent: str | None = None  # a path (with placeholders) that must not exist afterwards


def case(id: str, argv: str | list[str], expect: str, setup=None, absent: str | None = None) -> Case:
    """A Case from a command line written as one string (split on spaces) or a list."""
    return Case(id, tuple(argv.split() if isinstance(argv, str) else argv), expect, setup, absent)


def write_file(name: str, content: str | bytes):
    """Setup: the file {tmp}/NAME with this content."""

    def setup(tmp: Path, places: dict[str, Path]) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def copy_place(name: str, to: str = "copy"):
    """Setup: a copy of a shared fixture (a run dir or a file) at {tmp}/TO, for cases that damage it."""

    def setup(tmp: Path, places: dict[str, Path]) -> None:
        source = places[name]
        if source.is_dir():
            shutil.copytree(source, tmp / to)
        else:
            shutil.copy(source, tmp / to)

    return setup


def params(cases: list[Case]) -> list:
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return [pytest.param(c, id=c.id) for c in cases]


def snapshot(*roots: Path) -> dict[Path, str]:
    """sha256 of every file under the roots (a root may be a single file)."""
    hashes = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            hashes[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def fill(argv: tuple[str, ...], tmp: Path, places: dict[str, Path]) -> list[str]:
    return [arg.format(tmp=tmp, **places) for arg in argv]


def check_error_output(code: int, stderr: str, expect: str) -> None:
    assert code == 2, f"exit code {code}, stderr: {stderr}"
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert 1 <= len(lines) <= MAX_STDERR_LINES, stderr
    assert expect in stderr, f"{expect!r} not in {stderr!r}"


def check_case(c: Case, tmp: Path, capsys: pytest.CaptureFixture, places: dict[str, Path]) -> str:
    """Run one case in-process through genlab.cli.main; returns its stderr."""
    if c.setup is not None:
        c.setup(tmp, places)
    argv = fill(c.argv, tmp, places)
    before = snapshot(tmp, *places.values())
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own exits (e.g. --help) would land here
        code = exc.code if isinstance(exc.code, int) else 1
    stderr = capsys.readouterr().err
    check_error_output(code, stderr, c.expect)
    assert_unchanged(before, snapshot(tmp, *places.values()))
    if c.absent is not None:
        assert not Path(c.absent.format(tmp=tmp, **places)).exists(), c.absent
    return stderr


def assert_unchanged(before: dict[Path, str], after: dict[Path, str]) -> None:
    changed = [str(p) for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"changed or removed: {changed}"


def run_console(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The real console behaviour: `python -m genlab ARGV` in a subprocess, with this checkout's genlab."""
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "genlab", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
