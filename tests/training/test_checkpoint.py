"""Checkpoint files: atomic layout, fallbacks, and clear errors for corrupt or foreign run dirs."""

from __future__ import annotations

import json

import pytest

import genlab
from genlab.errors import CheckpointError
from genlab.runs import resolve_config
from genlab.training.checkpoint import latest_checkpoint
from genlab.training.trainer import Trainer
from tests.conftest import TINY_MODEL_ARGS


@pytest.fixture
def run_dir(tmp_path, mnist_small):
    config = resolve_config(
        overrides={
            "model": "vae",
            "epochs": 2,
            "batch_size": 64,
            "grid_size": 4,
            "model_args": TINY_MODEL_ARGS["vae"],
        }
    )
    Trainer(config, tmp_path / "run", dataset=mnist_small).fit()
    return tmp_path / "run"


def test_layout_is_safetensors_and_json_only(run_dir):
    checkpoint = latest_checkpoint(run_dir)
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "model.safetensors",
        "optimizers.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    assert json.loads((run_dir / "checkpoints" / "LATEST").read_text())["checkpoint"] == checkpoint.name


def test_half_written_checkpoint_is_ignored(run_dir):
    good = latest_checkpoint(run_dir)
    (run_dir / "checkpoints" / ".tmp-step-0000099").mkdir()  # a crash during a write leaves only this
    (run_dir / "checkpoints" / "LATEST").write_text('{"checkpoint": "step-0000099"}')  # and a stale pointer
    assert latest_checkpoint(run_dir) == good
    genlab.load(run_dir)


def test_corrupt_weights_give_a_clear_error(run_dir):
    (latest_checkpoint(run_dir) / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt weights file"):
        genlab.load(run_dir)


def test_weights_that_do_not_fit_the_config(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    config["model_config"]["latent_dim"] = 7
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not fit"):
        genlab.load(run_dir)


def test_foreign_and_missing_dirs(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        genlab.load(tmp_path / "nope")
    (tmp_path / "foreign").mkdir()
    with pytest.raises(CheckpointError, match="not a genlab run"):
        genlab.load(tmp_path / "foreign")
    (tmp_path / "foreign" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        genlab.load(tmp_path / "foreign")
