"""Training configuration: one dataclass, YAML/JSON files, and `--set key=value` overrides.

Precedence, lowest first: TrainConfig defaults < the model's preset < a config file < `--set` < explicit
CLI flags. Model settings live under `model_args` (file) or `model.<field>` (`--set model.beta=4`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .constraints import (
    FLAG,
    MAX_SEED,
    Check,
    DeviceName,
    OneOf,
    at_least,
    check_config,
    coerce_value,
    fraction,
    positive,
)
from .errors import ConfigError

__all__ = ["TrainConfig", "coerce_value", "load_config_file", "parse_overrides", "set_value"]


@dataclass
class TrainConfig:
    model: str = "gan"
    preset: str = "default"
    data: str = "mnist-5k"
    epochs: int = 20
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"  # auto = cuda, then mps, then cpu
    ema_decay: float = 0.0  # 0 disables; else sampling uses an exponential moving average of the weights
    grad_clip: float = 0.0  # max global grad norm per optimizer step; 0 disables
    # Linear learning-rate decay: after this share of the configured epochs every optimizer's learning rate
    # falls linearly towards 0 at the last step (1 = constant). A time-limited run that stops before its
    # epochs end stops part-way down the ramp.
    lr_decay_start: float = 1.0
    log_every: int = 25  # steps between metrics.jsonl records (and NaN checks)
    grid_size: int = 64  # images in the fixed-noise grid written every epoch
    # epochs between those grids (the last epoch always gets one): long runs of a model whose sampling is
    # costly (a refining GAN: ~50 G+D passes per image) would otherwise spend a large share of their time on grids
    grid_every: int = 1
    keep_checkpoints: int = 2  # the newest N checkpoints are kept; the last good one always is
    time_limit_minutes: float = 0.0  # stop cleanly (with a checkpoint) after this much training; 0 = none
    eval_every: int = 0  # epochs between quick evals (classifier FID etc.) in metrics.jsonl; 0 = off
    eval_n: int = 2000  # samples per quick eval
    dp_epsilon: float = 0.0  # differential privacy: train with DP-SGD to this (epsilon, delta); 0 = off
    dp_delta: float = 0.0  # 0 = 1 / (training images)
    dp_max_grad_norm: float = 1.0  # DP-SGD clips each example's gradient to this L2 norm
    precision: str = "fp32"  # or "bf16": autocast forward passes (GPUs, CPUs with bf16 units)
    compile: bool = False  # torch.compile the networks (on CUDA with CUDA graphs)
    model_args: dict[str, Any] = field(default_factory=dict)
    constraints: ClassVar[dict[str, Check]] = {
        "epochs": at_least(1, 1_000_000),
        "batch_size": at_least(1, 1_000_000),
        "seed": at_least(0, MAX_SEED),
        "device": DeviceName(),
        "ema_decay": fraction(high_open=True),
        "grad_clip": at_least(0),
        "lr_decay_start": fraction(),
        "log_every": at_least(1),
        "grid_size": at_least(1, 1024),
        "grid_every": at_least(1, 1_000_000),
        "keep_checkpoints": at_least(1),
        "time_limit_minutes": at_least(0),
        "eval_every": at_least(0),
        "eval_n": at_least(10, 1_000_000),
        "dp_epsilon": at_least(0),  # 0 = no DP
        "dp_delta": fraction(high_open=True),  # 0 = 1 / (training images)
        "dp_max_grad_norm": positive(),
        "precision": OneOf(("fp32", "bf16")),
        "compile": FLAG,
    }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        config = cls()
        for key, value in values.items():
            set_value(config, key, value)
        return config

    def validate(self) -> None:
        """Every setting against its entry in `constraints` (ranges, choices), with the range in the error."""
        check_config(self)


_CHECKED_ELSEWHERE = ("model", "preset", "data", "model_args")  # by the registry, the loader, the model

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def set_value(config: TrainConfig, key: str, value: Any) -> None:
    """Apply one setting; `model.<name>` goes to model_args (checked later against the model's Config)."""
    if key.startswith("model."):
        config.model_args[key[len("model.") :]] = value
        return
    if key == "model_args":
        if not isinstance(value, dict):
            raise ConfigError("model_args must be a mapping of model settings")
        config.model_args.update(value)
        return
    if key not in _FIELDS:
        raise ConfigError(
            f"unknown setting {key!r}; known: {', '.join(sorted(_FIELDS))}, or model.<name> for model settings"
        )
    value = coerce_value(key, value, getattr(TrainConfig(), key))
    setattr(config, key, absolute_data_path(value) if key == "data" else value)


def absolute_data_path(data: str) -> str:
    """A dataset given as a relative path, stored absolute: the run then works from any folder. Built-in
    names (which win over a folder of the same name) and paths that do not exist are kept as given."""
    from .data.sources import BUILTIN_DATASETS, CIFAR10_ALIASES

    if data in BUILTIN_DATASETS or data in CIFAR10_ALIASES:
        return data
    path = Path(data).expanduser()
    return str(path.resolve()) if path.exists() else data


def parse_overrides(pairs: list[str], option: str = "--set") -> dict[str, str]:
    """['a=1', 'model.b=x'] -> {'a': '1', 'model.b': 'x'}, with a clear error (naming the command-line
    option the pairs came from) for a missing '='."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} expects key=value, got {pair!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def route_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """`--set lr_d=1e-4` is shorthand for `--set model.lr_d=1e-4` when lr_d is no training setting."""
    train_fields = set(_FIELDS) | {"model", "preset"}
    return {
        key if key in train_fields or key.startswith("model.") else f"model.{key}": value
        for key, value in overrides.items()
    }


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict of settings."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {str(exc).splitlines()[0]}") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return values


def save_config_file(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
