"""Tiny trained runs shared by the provenance, explain and export tests (one epoch on 256 digits)."""

from __future__ import annotations

from pathlib import Path

import genlab
from tests.conftest import TINY_MODEL_ARGS


def train_tiny(root: Path, npz: Path, name: str, **settings) -> Path:
    out = root / name
    genlab.train(
        model=name,
        data=str(npz),
        epochs=1,
        batch_size=32,
        grid_size=4,
        log_every=4,
        model_args=dict(TINY_MODEL_ARGS[name]),
        out=out,
        **settings,
    )
    return out
