"""Kill training with SIGKILL at many moments and check what is left; run by test_kill.py.

One driver process imports torch and genlab once, then forks training children one after another on
the same run directory and kills each with SIGKILL: half at a random moment, half while a checkpoint
is being written (the child slows its checkpoint writes and signals through a pipe when one starts).
After every kill it checks that the run loads (`genlab info`), that metrics.jsonl still holds every
record up to the newest checkpoint, and then resumes. Finally an unkilled child finishes the run and an
uninterrupted reference run (trained first, in the driver): their logged losses and final weights must be equal.

usage: python kill_driver.py WORK_DIR --kills 24 --seed 0   (prints a JSON summary on the last line)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import select
import signal
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401  (imported once here, not in every child)
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # before any torch work: forked children then run safely single-threaded

import genlab  # noqa: E402
from genlab import viz  # noqa: E402,F401
from genlab.cli import main  # noqa: E402
from genlab.errors import GenlabError  # noqa: E402
from genlab.training import checkpoint, trainer  # noqa: E402,F401
from genlab.training.checkpoint import latest_checkpoint, load_weights  # noqa: E402
from genlab.training.metrics_log import read_records  # noqa: E402

WRITE_PAUSE = 0.02  # seconds each checkpoint file write is slowed by in killed children


def train_args(run: Path, data: Path, epochs: int, resume: bool) -> list[str]:
    args = ["train", "--out", str(run), "--data", str(data), "--model", "gan", "--epochs", str(epochs)]
    args += ["--batch-size", "32", "--seed", "3", "--device", "cpu"]
    args += ["--set", "model.latent_dim=4", "--set", "model.g_hidden=[16]", "--set", "model.d_hidden=[16]"]
    args += ["--set", "log_every=1", "--set", "grid_size=4", "--set", "keep_checkpoints=2"]
    return [*args, "--resume"] if resume else args


def child(argv: list[str], signal_fd: int | None, log: Path) -> None:
    """The forked child: slow, signalling checkpoint writes; then the CLI, then exit without cleanup."""
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        if signal_fd is not None:
            real_save, real_json = checkpoint.save_file, checkpoint.write_json_atomic

            def slow(real):
                def write(*args, **kwargs):
                    os.write(signal_fd, b"w")
                    time.sleep(WRITE_PAUSE)
                    return real(*args, **kwargs)

                return write

            checkpoint.save_file = slow(real_save)
            checkpoint.write_json_atomic = slow(real_json)
        code = main(argv)
    finally:
        os._exit(code)


def run_child(argv: list[str], log: Path, kill_after=None, kill_in_write=None) -> dict:
    """Fork a training child; kill it after `kill_after` seconds, or `kill_in_write` = (n, delay): the
    delay after its n-th checkpoint file write starts. Returns what happened."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        child(argv, write_fd if (kill_after or kill_in_write) else None, log)
    os.close(write_fd)
    start, killed, writes = time.perf_counter(), False, 0
    deadline = start + (kill_after if kill_after is not None else 60.0)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        timeout = max(0.0, deadline - time.perf_counter())
        ready, _, _ = select.select([read_fd], [], [], min(timeout, 0.05))
        if ready:
            chunk = os.read(read_fd, 64)
            writes += len(chunk)
            if kill_in_write and writes >= kill_in_write[0] and deadline - start >= 60.0:
                deadline = time.perf_counter() + kill_in_write[1]
        if (kill_after is not None or kill_in_write) and time.perf_counter() >= deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            killed = True
            break
    os.close(read_fd)
    return {
        "killed": killed,
        "exit": None if killed else os.waitstatus_to_exitcode(status),
        "seconds": round(time.perf_counter() - start, 3),
        "writes_seen": writes,
    }


def check_run(run: Path) -> dict:
    """After a kill: does the run load, does `genlab info` answer, is the history up to the checkpoint whole?"""
    if not (run / "config.json").is_file():
        return {"state": "no config yet"}
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        info_code = main(["info", str(run), "--json"])
    try:
        step = genlab.load(run).state["step"]
    except GenlabError as exc:
        assert "no checkpoint" in str(exc), str(exc)  # killed before the first checkpoint: resumable
        assert info_code == 2, quiet.getvalue()
        return {"state": "no checkpoint yet"}
    assert info_code == 0, quiet.getvalue()
    records, damaged = read_records(run / "metrics.jsonl")
    kept = [r["step"] for r in records if r["step"] <= step]
    assert kept == list(range(1, step + 1)), f"history lost: {kept[:5]}... for checkpoint step {step}"
    assert damaged <= 1, f"{damaged} damaged metrics lines"  # at most a torn last line
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    return {"state": "loads", "step": step, "torn_lines": damaged, "temp_folders": len(leftovers)}


def losses(run: Path) -> list[dict]:
    records, _ = read_records(run / "metrics.jsonl")
    return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in records]


def main_driver() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "tiny.npz"
    images = np.random.default_rng(args.seed).integers(0, 256, size=(128, 8, 8), dtype=np.uint8)
    np.savez(data, images=images)
    run, log = args.work / "killed", args.work / "children.log"
    # the uninterrupted reference, in this process: it also does every lazy import (torch._dynamo via the
    # optimizers: seconds) once, so the forked children reach training at once
    with open(log, "a") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert main(train_args(args.work / "reference", data, args.epochs, resume=False)) == 0
    kills = []
    while len(kills) < args.kills:
        resume = (run / "config.json").is_file()
        argv = train_args(run, data, args.epochs, resume)
        if len(kills) == 0:  # during the first epoch: no checkpoint yet, the run must start over
            outcome = run_child(argv, log, kill_after=0.1)
            outcome["moment"] = "first epoch"
        elif len(kills) == 1:  # inside the first checkpoint write, before LATEST exists
            outcome = run_child(argv, log, kill_in_write=(2, WRITE_PAUSE / 2))
            outcome["moment"] = "in checkpoint write"
        elif len(kills) % 2 == 0:
            outcome = run_child(argv, log, kill_after=rng.uniform(0.05, 0.8))
            outcome["moment"] = "random"
        else:
            outcome = run_child(argv, log, kill_in_write=(rng.randint(1, 15), rng.uniform(0, WRITE_PAUSE)))
            outcome["moment"] = "in checkpoint write"
        if not outcome["killed"]:
            raise SystemExit(f"a child finished before its kill ({outcome}); raise --epochs")
        outcome.update(check_run(run))
        kills.append(outcome)
    finish = run_child(train_args(run, data, args.epochs, resume=True), log)
    assert finish["exit"] == 0, f"resume after the kills failed: see {log}"
    same_losses = losses(run) == losses(args.work / "reference")
    final = load_weights(latest_checkpoint(run) / "model.safetensors")
    expected = load_weights(latest_checkpoint(args.work / "reference") / "model.safetensors")
    same_weights = final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)
    print(
        json.dumps(
            {
                "kills": kills,
                "records": len(losses(run)),
                "same_losses": same_losses,
                "same_weights": same_weights,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main_driver())
