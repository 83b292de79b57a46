"""genlab: train, sample, evaluate and serve generative image models.

import genlab
genlab.train(model="vae", epochs=5, out="runs/vae")
run = genlab.load("runs/vae")
images = run.sample(16)          # (16, 1, 28, 28) in [0, 1]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TrainConfig
from .errors import GenlabError
from .registry import list_models
from .runs import Run, load, resolve_config

__version__ = "0.1.0"
__all__ = ["GenlabError", "Run", "TrainConfig", "list_models", "load", "train", "__version__"]


def train(
    config: TrainConfig | dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    **settings: Any,
) -> Run:
    """Train a model and return the loaded run. Settings are TrainConfig fields (model="vae", epochs=5,
    seed=1, ...) or model settings as model_args={...}; the model's preset fills the rest."""
    from .training.trainer import Trainer

    if isinstance(config, TrainConfig):
        config = config.to_dict()
    resolved = resolve_config(file_values=config or {}, overrides=settings)
    run_dir = Path(out) if out is not None else Path("runs") / resolved.model
    Trainer(resolved, run_dir, resume=resume).fit()
    return load(run_dir)
