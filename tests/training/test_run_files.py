"""Run-directory files that are damaged but recoverable: a torn metrics.jsonl line, a run killed before
its first checkpoint, --overwrite, and the run lock."""

from __future__ import annotations

import json
import shutil

import pytest

import genlab
from genlab.cli import main
from genlab.errors import ConfigError
from genlab.training.metrics_log import keep_up_to, read_records
from genlab.training.run_lock import RunLock


def test_damaged_metrics_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo\n[1]\n{"step": "3"}\n\n{"step": 4}\n')
    records, damaged = read_records(path)
    assert [r["step"] for r in records] == [1, 4] and damaged == 3
    assert keep_up_to(path, 2) == 3
    assert path.read_text() == '{"step": 1, "loss": 0.5}\n'


def test_resume_with_a_torn_metrics_line_keeps_history(tiny_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["gan"], run)
    history = (run / "metrics.jsonl").read_text()
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 99, "loss_d": 0.')  # a kill while a record was being appended
    assert main(["info", str(run)]) == 0
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 0
    assert "dropped 1 damaged line" in capsys.readouterr().err
    text = (run / "metrics.jsonl").read_text()
    assert text.startswith(history) and len(text.splitlines()) > len(history.splitlines())
    assert all(isinstance(json.loads(line), dict) for line in text.splitlines())


def test_run_killed_before_its_first_checkpoint_can_be_resumed_or_overwritten(tiny_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["vae"], run)
    shutil.rmtree(run / "checkpoints")  # what a kill during the first epoch leaves: config.json, some metrics
    assert main(["train", "--out", str(run), "--epochs", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume"]) == 0  # starts over with the saved settings
    assert "starting it over" in capsys.readouterr().err
    resumed = genlab.load(run)
    assert resumed.state["epoch"] == 1 and resumed.config.model == "vae"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no records of the killed attempt


def test_overwrite_replaces_the_run(tiny_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["vae"], run)
    (run / "notes.txt").write_text("mine")
    args = ["train", "--out", str(run), "--model", "ae", "--epochs", "1", "--batch-size", "64"]
    args += ["--data", genlab.load(run).config.data, "--set", "model.arch=mlp", "--set", "model.hidden=[16]"]
    args += ["--set", "grid_size=4"]
    assert main([*args, "--overwrite"]) == 0
    assert genlab.load(run).config.model == "ae"
    assert (run / "notes.txt").read_text() == "mine"  # only what training writes is replaced


def test_the_run_lock_is_exclusive_and_released(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(ConfigError, match="being trained by process"):
        RunLock(tmp_path).acquire()
    first.release()
    RunLock(tmp_path).acquire().release()
