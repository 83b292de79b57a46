"""Training configuration: one dataclass, YAML/JSON files, and `--set key=value` overrides.

Precedence, lowest first: TrainConfig defaults < the model's preset < a config file < `--set` < explicit
CLI flags. Model settings live under `model_args` (file) or `model.<field>` (`--set model.beta=4`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


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
    log_every: int = 25  # steps between metrics.jsonl records (and NaN checks)
    grid_size: int = 64  # images in the fixed-noise grid written every epoch
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        config = cls()
        for key, value in values.items():
            set_value(config, key, value)
        return config

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.grad_clip >= 0.0, f"grad_clip must be >= 0, got {self.grad_clip}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.time_limit_minutes >= 0, f"time_limit_minutes must be >= 0, got {self.time_limit_minutes}"),
            (self.grid_size >= 1, f"grid_size must be >= 1, got {self.grid_size}"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.eval_n >= 10, f"eval_n must be >= 10, got {self.eval_n}"),
            (self.dp_epsilon >= 0.0, f"dp_epsilon must be > 0 (or 0 for no DP), got {self.dp_epsilon}"),
            (0.0 <= self.dp_delta < 1.0, f"dp_delta must be in (0, 1) (or 0 for 1/N), got {self.dp_delta}"),
            (self.dp_max_grad_norm > 0.0, f"dp_max_grad_norm must be > 0, got {self.dp_max_grad_norm}"),
            (self.precision in ("fp32", "bf16"), f"precision must be fp32 or bf16, got {self.precision!r}"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}"),
            (
                self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
                f"device must be auto, cpu, cuda[:N] or mps, got {self.device!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def coerce_value(key: str, value: Any, like: Any) -> Any:
    """Convert `value` (often a string from the command line) to the type of the default `like`."""
    if isinstance(value, str) and not isinstance(like, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse value {value!r} for {key}") from exc
    try:
        if isinstance(like, bool):
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(like, int) and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(like, float) and not isinstance(value, bool):
            return float(value)
        if isinstance(like, (tuple, list)):
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return tuple(value)
        if isinstance(like, str):
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value {value!r} for {key}: expected {type(like).__name__}") from exc
    return value


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
    setattr(config, key, coerce_value(key, value, getattr(TrainConfig(), key)))


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """['a=1', 'model.b=x'] -> {'a': '1', 'model.b': 'x'}, with a clear error for a missing '='."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
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
