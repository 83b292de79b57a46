"""A corpus of damaged run files and faults: each is one line on stderr, exit code 2, no traceback, a
message that names the problem, and no file that existed before changed (the last good checkpoint kept).

Each case copies a tiny trained run, damages one thing, runs one `genlab` command in-process and checks
the promise. The fault cases (a full disk, a read-only folder) monkeypatch the write that fails.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from genlab.cli import main

from .corpus import snapshot

CHECKPOINT = "checkpoints/@"  # "@" stands for the newest checkpoint folder of the run


def resolve(run: Path, relative: str) -> Path:
    if "@" in relative:
        newest = sorted(p.name for p in (run / "checkpoints").glob("step-*"))[-1]
        relative = relative.replace("@", newest)
    return run / relative


@dataclass
class Case:
    name: str
    damage: Callable[[Path], None]  # run_dir -> None: breaks one thing
    argv: list[str]  # "{run}" is the damaged run's folder, "{tmp}" a scratch folder
    message: str  # a regex the one-line error must match (case-insensitive)
    family: str = "gan"
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    may_change: tuple[str, ...] = field(default=())  # relative paths a case may rewrite (fault cases)


# --- damage helpers --------------------------------------------------------------------------------------
def write(relative: str, content: str | bytes) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = resolve(run, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return damage


def edit_json(relative: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Apply change(value) to a JSON file; a non-None return replaces the whole value."""

    def damage(run: Path) -> None:
        path = resolve(run, relative)
        value = json.loads(path.read_text())
        replaced = change(value)
        path.write_text(json.dumps(value if replaced is None else replaced))

    return damage


def truncate(relative: str, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = resolve(run, relative)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return damage


def edit_tensors(relative: str, change: Callable[[dict], dict]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = resolve(run, relative)
        save_file(change(load_file(str(path))), str(path))

    return damage


def fill_first_float(value: float) -> Callable[[dict], dict]:
    def change(tensors: dict) -> dict:
        key = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = value
        return tensors

    return change


def grow_tensors(tensors: dict) -> dict:
    return {k: torch.cat([v, v]) if v.dim() > 0 else v for k, v in tensors.items()}


def remove(relative: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        target = resolve(run, relative)
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return damage


def both(*damages: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        for one in damages:
            one(run)

    return damage


def nothing(run: Path) -> None:
    pass


def set_key(*keys_and_value):
    *keys, value = keys_and_value

    def change(document: dict) -> None:
        for key in keys[:-1]:
            document = document[key]
        document[keys[-1]] = value

    return change


def drop_key(*keys):
    def change(document: dict) -> None:
        for key in keys[:-1]:
            document = document[key]
        del document[keys[-1]]

    return change


def failing(target: str, error: int) -> Callable[[pytest.MonkeyPatch], None]:
    """Make `target` (a dotted name) raise OSError(error): a full disk, a read-only folder. A module's
    `open` is shadowed (raising=False), the builtin elsewhere untouched."""

    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        def fail(*args, **kwargs):
            raise OSError(error, os.strerror(error))

        monkeypatch.setattr(target, fail, raising=not target.endswith(".open"))

    return patch


def drop_last_param(state: dict) -> None:
    """The optimizer metadata of a model with one parameter fewer."""
    state["optimizers"]["d"]["param_groups"][0]["params"].pop()


def failing_checkpoint_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder that turns read-only once training runs: renaming the finished checkpoint into place fails."""
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):
        if ".tmp-step-" in str(source):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


STATE, LATEST, CONFIG = f"{CHECKPOINT}/state.json", "checkpoints/LATEST", "config.json"
MODEL, EMA = f"{CHECKPOINT}/model.safetensors", f"{CHECKPOINT}/ema.safetensors"
OPTIMIZERS, RNG = f"{CHECKPOINT}/optimizers.safetensors", f"{CHECKPOINT}/rng.safetensors"
INFO, SAMPLE = ["info", "{run}"], ["sample", "{run}", "--n", "4", "--out", "{tmp}/s.png"]
RESUME = ["train", "--out", "{run}", "--resume", "--epochs", "2"]

CASES = [
    # checkpoints/LATEST: a pointer to a sibling checkpoint folder, nothing else
    Case("latest-list", write(LATEST, "[1, 2]"), INFO, r"LATEST.*expected a JSON object"),
    Case("latest-string", write(LATEST, '"step-0000007"'), INFO, r"LATEST.*expected a JSON object"),
    Case("latest-number", write(LATEST, '{"checkpoint": 5}'), INFO, r"LATEST.*step-NNNNNNN"),
    Case(
        "latest-outside-run",
        write(LATEST, '{"checkpoint": "../../other/checkpoints/step-0000007"}'),
        INFO,
        r"LATEST.*must name a checkpoint folder of this run",
    ),
    Case("latest-absolute", write(LATEST, '{"checkpoint": "/tmp"}'), SAMPLE, r"LATEST.*this run"),
    Case("latest-not-json", write(LATEST, "garbage"), INFO, r"corrupt .*LATEST"),
    Case("latest-binary", write(LATEST, b"\xff\xfe\x00"), INFO, r"corrupt .*LATEST"),
    Case("latest-empty-object", write(LATEST, "{}"), INFO, r"LATEST.*got None"),
    # state.json: counters, optimizer metadata, extras
    Case("state-list", write(STATE, "[]"), INFO, r"state\.json.*expected a JSON object, found a list"),
    Case("state-string", write(STATE, '"x"'), INFO, r"state\.json.*found a string"),
    Case("state-missing-step", edit_json(STATE, drop_key("step")), INFO, r"state\.json.*'step' is missing"),
    Case(
        "state-negative-step", edit_json(STATE, set_key("step", -1)), INFO, r"'step' must be a whole number"
    ),
    Case("state-step-text", edit_json(STATE, set_key("step", "7")), INFO, r"'step' must be a whole number"),
    Case(
        "state-epoch-bool", edit_json(STATE, set_key("epoch", True)), INFO, r"'epoch' must be a whole number"
    ),
    Case("state-optimizers-list", edit_json(STATE, set_key("optimizers", [])), RESUME, r"'optimizers' must"),
    Case(
        "state-no-param-groups",
        edit_json(STATE, drop_key("optimizers", "d", "param_groups")),
        RESUME,
        r"optimizer 'd' has no list of param_groups",
    ),
    Case("state-truncated", truncate(STATE), INFO, r"corrupt .*state\.json"),
    Case("state-empty", write(STATE, ""), SAMPLE, r"corrupt .*state\.json"),
    Case("state-extra-list", edit_json(STATE, set_key("extra", [])), INFO, r"'extra' must be an object"),
    Case(
        "state-privacy-malformed",
        edit_json(STATE, set_key("extra", {"privacy": {"epsilon": "lots"}})),
        INFO,
        r"extra\.privacy",
    ),
    Case("state-missing", remove(STATE), INFO, r"no checkpoint in .*not finished an epoch"),
    Case(
        "optimizer-from-another-model",
        edit_json(STATE, drop_last_param),
        RESUME,
        r"optimizer state .* does not fit the model",
    ),
    # config.json: the run's settings
    Case("config-list", write(CONFIG, "[]"), INFO, r"config\.json.*expected a JSON object"),
    Case("config-null", write(CONFIG, "null"), SAMPLE, r"config\.json.*found a null"),
    Case("config-model-config-list", edit_json(CONFIG, set_key("model_config", [])), INFO, r"'model_config'"),
    Case("config-train-list", edit_json(CONFIG, set_key("train", [1])), INFO, r"'train' must be an object"),
    Case("config-train-missing", edit_json(CONFIG, drop_key("train")), INFO, r"'train' is missing"),
    Case("config-data-list", edit_json(CONFIG, set_key("data", [])), INFO, r"'data' must be an object"),
    Case(
        "config-negative-latent",
        edit_json(CONFIG, set_key("model_config", "latent_dim", -4)),
        INFO,
        r"config\.json.*(latent|negative)",
    ),
    Case(
        "config-latent-text",
        edit_json(CONFIG, set_key("model_config", "latent_dim", "abc")),
        SAMPLE,
        r"config\.json.*latent_dim",
    ),
    Case(
        "config-unknown-setting",
        edit_json(CONFIG, set_key("model_config", "bogus", 1)),
        INFO,
        r"config\.json.*bogus",
    ),
    Case("config-bad-epochs", edit_json(CONFIG, set_key("train", "epochs", "many")), INFO, r"epochs"),
    Case(
        "config-zero-epochs",
        edit_json(CONFIG, set_key("train", "epochs", 0)),
        INFO,
        r"epochs must be in \[1, ",
    ),
    Case(
        "config-unknown-model", edit_json(CONFIG, set_key("train", "model", "nope")), INFO, r"unknown model"
    ),
    Case("config-truncated", truncate(CONFIG), INFO, r"corrupt .*config\.json"),
    Case("config-missing", remove(CONFIG), INFO, r"not a genlab run directory"),
    # safetensors: truncated, foreign, non-finite
    Case("weights-truncated", truncate(EMA), INFO, r"corrupt weights file .*ema\.safetensors"),
    Case("weights-empty", write(EMA, b""), SAMPLE, r"corrupt weights file"),
    Case("weights-huge-header", write(EMA, b"\xff" * 8 + b"{}"), INFO, r"corrupt weights file"),
    Case(
        "weights-wrong-keys",
        edit_tensors(EMA, lambda t: {"foo": torch.zeros(3)}),
        INFO,
        r"do not fit the model in its config\.json",
    ),
    Case("weights-wrong-shapes", edit_tensors(EMA, grow_tensors), SAMPLE, r"do not fit the model"),
    Case("weights-nan", edit_tensors(EMA, fill_first_float(float("nan"))), SAMPLE, r"weights .* not finite"),
    Case("weights-inf", edit_tensors(EMA, fill_first_float(float("inf"))), INFO, r"weights .* not finite"),
    Case(
        "weights-nan-model-on-resume",
        edit_tensors(MODEL, fill_first_float(float("nan"))),
        RESUME,
        r"model\.safetensors|not finite",
    ),
    Case(
        "optimizer-moments-other-shape",
        edit_tensors(OPTIMIZERS, grow_tensors),
        RESUME,
        r"optimizer state .* does not fit the model \(.*shape",
    ),
    Case("optimizer-truncated", truncate(OPTIMIZERS), RESUME, r"corrupt weights file .*optimizers"),
    Case(
        "optimizer-bad-key",
        edit_tensors(OPTIMIZERS, lambda t: {"d/x/exp_avg": torch.zeros(2)}),
        RESUME,
        r"optimizer state .* does not fit",
    ),
    Case(
        "rng-wrong-dtype",
        edit_tensors(RNG, lambda t: {"torch_cpu": t["torch_cpu"].float()}),
        RESUME,
        r"rng\.safetensors.*random-number state",
    ),
    Case(
        "rng-missing-key", edit_tensors(RNG, lambda t: {"other": torch.zeros(1)}), RESUME, r"rng\.safetensors"
    ),
    Case("rng-truncated", truncate(RNG, 0.3), RESUME, r"corrupt weights file .*rng"),
    # eval.json, read by `genlab compare`
    Case("eval-list", write("eval.json", "[]"), ["compare", "{run}", "{run}"], r"eval\.json.*'metrics'"),
    Case("eval-truncated", write("eval.json", '{"metrics": {"fid'), ["compare", "{run}"], r"eval\.json"),
    Case(
        "eval-fid-text",
        write("eval.json", '{"metrics": {"fid": "low"}}'),
        ["compare", "{run}"],
        r"eval\.json.*'fid' is not a number",
    ),
    Case(
        "eval-coverage-number",
        write("eval.json", '{"metrics": {"class_coverage": 3}}'),
        ["compare", "{run}"],
        r"eval\.json.*malformed",
    ),
    Case("eval-binary", write("eval.json", b"\x80\x81"), ["compare", "{run}"], r"cannot read .*eval\.json"),
    # the run directory itself and training into it
    Case("run-is-a-file", lambda run: None, ["info", "{run}/config.json"], r"not found|not a genlab run"),
    Case("train-into-a-run", nothing, ["train", "--out", "{run}", "--epochs", "1"], r"--resume.*--overwrite"),
    Case(
        "train-first-epoch-killed",
        remove("checkpoints"),
        ["train", "--out", "{run}", "--epochs", "1"],
        r"never finished its first checkpoint.*--overwrite",
    ),
    Case("train-resume-and-overwrite", nothing, [*RESUME, "--overwrite"], r"pass one of them"),
    Case("train-out-is-a-file", nothing, ["train", "--out", "{run}/config.json"], r"is a file, not a folder"),
    # faults: a full disk or a read-only folder while training writes; the last good checkpoint is kept
    Case(
        "disk-full-checkpoint",
        nothing,
        RESUME,
        r"cannot write checkpoint .*no space left.*last good checkpoint is kept",
        patch=failing("genlab.training.checkpoint.save_file", errno.ENOSPC),
        may_change=("metrics.jsonl", "samples.png", "loss_curves.png"),
    ),
    Case(
        "read-only-checkpoint-rename",
        nothing,
        RESUME,
        r"cannot write checkpoint .*read-only.*last good checkpoint is kept",
        patch=failing_checkpoint_rename,
        may_change=("metrics.jsonl", "samples.png", "loss_curves.png"),
    ),
    Case(
        "disk-full-grid",
        nothing,
        RESUME,
        r"cannot write to .*No space left.*last good checkpoint is kept",
        patch=failing("genlab.viz.save_grid", errno.ENOSPC),
        may_change=("metrics.jsonl",),
    ),
    Case(
        "disk-full-metrics-append",
        nothing,
        RESUME,
        r"cannot write to .*No space left.*last good checkpoint is kept",
        patch=failing("genlab.training.trainer.open", errno.ENOSPC),
    ),
    Case(
        "read-only-metrics-append",
        nothing,
        RESUME,
        r"cannot write to .*Read-only file system.*last good checkpoint is kept",
        patch=failing("genlab.training.trainer.open", errno.EROFS),
    ),
    Case(
        "sample-out-under-a-file",
        nothing,
        ["sample", "{run}", "--n", "2", "--out", "{run}/config.json/s.png"],
        r"(File exists|Not a directory).*config\.json",
    ),
    Case(
        "sample-npz-disk-full",
        nothing,
        ["sample", "{run}", "--n", "2", "--out", "{tmp}/s.npz"],
        r"No space left",
        patch=failing("zipfile.ZipFile", errno.ENOSPC),
    ),
    Case(
        "disk-full-metrics-truncation",
        nothing,
        RESUME,
        r"cannot rewrite .*metrics\.jsonl.*no space left.*unchanged",
        patch=failing("genlab.training.metrics_log.os.fsync", errno.ENOSPC),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_damaged_run_files_fail_cleanly(case, tiny_runs, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs[case.family], run)
    case.damage(run)
    if case.patch:
        case.patch(monkeypatch)
    before = snapshot(tmp_path)
    argv = [arg.format(run=run, tmp=tmp_path) for arg in case.argv]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}; stderr: {err}"
    assert 1 <= len(lines) <= 3, err
    assert "Traceback" not in err
    assert re.search(case.message, err, flags=re.I), err
    after = snapshot(tmp_path)
    for path, digest in before.items():
        name = path.relative_to(tmp_path).as_posix()
        if not any(name.startswith(f"run/{allowed}") for allowed in case.may_change):
            assert after.get(path) == digest, f"{name} changed or vanished"


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40


def test_two_trainings_on_one_out_cannot_interleave(tiny_runs, tmp_path, capsys):
    """The second training (here in the same process, as a second open file) gets a clear message."""
    from genlab.training.run_lock import RunLock

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["gan"], run)
    before = snapshot(run)
    holder = RunLock(run).acquire()
    try:
        code = main(["train", "--out", str(run), "--resume", "--epochs", "2"])
    finally:
        holder.release()
    err = capsys.readouterr().err
    assert code == 2 and "is being trained by process" in err and len(err.strip().splitlines()) == 1
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }
