"""SIGKILL during training 24 times, half of them inside checkpoint writes (see kill_driver.py): the run
always loads, keeps its history up to the newest checkpoint, resumes, and ends with exactly the losses
and weights of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KILLS = 24
DRIVER = Path(__file__).with_name("kill_driver.py")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill driver forks its training children")
def test_sigkill_at_many_moments_loses_nothing(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(tmp_path), "--kills", str(KILLS), "--seed", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:] + (tmp_path / "children.log").read_text()[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    kills = summary["kills"]
    assert len(kills) == KILLS and all(kill["killed"] for kill in kills)
    assert sum(kill["moment"] == "in checkpoint write" for kill in kills) >= KILLS // 2
    assert kills[0]["state"] in ("no config yet", "no checkpoint yet")  # the first-epoch kill started over
    assert sum(kill["state"] == "loads" for kill in kills) >= KILLS - 4
    steps = [kill["step"] for kill in kills if kill["state"] == "loads"]
    assert steps == sorted(steps) and steps[-1] > steps[0]  # the killed run kept making progress
    assert summary["same_losses"], "the resumed run's losses differ from the uninterrupted run's"
    assert summary["same_weights"], "the resumed run's final weights differ from the uninterrupted run's"
