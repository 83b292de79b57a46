"""Resolving a training config, building models by name, and loading finished runs for use."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig, set_value
from .constraints import check_model_size
from .errors import CheckpointError, ConfigError, GenlabError
from .models.base import GenerativeModel
from .registry import get_model_class
from .training.checkpoint import (
    CONFIG_FILE,
    latest_checkpoint,
    load_model_weights,
    load_weights,
    read_json,
    read_state,
)


def resolve_config(
    file_values: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
) -> TrainConfig:
    """TrainConfig defaults < the model's preset < config file < --set overrides < explicit flags."""
    layers = [file_values or {}, overrides or {}, {k: v for k, v in (flags or {}).items() if v is not None}]
    model_name, preset_name = "gan", "default"
    for layer in layers:
        model_name = str(layer.get("model", model_name))
        preset_name = str(layer.get("preset", preset_name))
    model_class = get_model_class(model_name)
    if preset_name not in model_class.presets:
        raise ConfigError(
            f"unknown preset {preset_name!r} for {model_name}; choose one of: {', '.join(model_class.presets)}"
        )
    preset = model_class.presets[preset_name]
    config = TrainConfig(model=model_name, preset=preset_name)
    for key, value in preset.train.items():
        set_value(config, key, value)
    config.model_args.update(preset.model)
    for layer in layers:
        for key, value in layer.items():
            if key not in ("model", "preset"):
                set_value(config, key, value)
    config.validate()
    typed = model_class.make_config(config.model_args)  # unknown or badly typed settings fail here, early
    config.model_args = {key: getattr(typed, key) for key in config.model_args}
    return config


def model_config_values(
    config: TrainConfig, image_shape: tuple[int, ...], num_classes: int
) -> dict[str, Any]:
    """The model settings of a new run: its model_args plus what the dataset decides."""
    return {**config.model_args, "image_shape": tuple(image_shape), "num_classes": max(num_classes, 1)}


def build_model(model_name: str, model_config_values: dict[str, Any]) -> GenerativeModel:
    model_class = get_model_class(model_name)
    config = model_class.make_config(model_config_values)
    try:
        check_model_size(model_class, config)
        return model_class(config)
    except (ValueError, RuntimeError, TypeError, OverflowError) as exc:  # e.g. a negative layer size
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"bad {model_name} settings: {reason}") from exc


class Run:
    """A trained run loaded for use: `run.sample(16)`, `run.reconstruct(x)`, `run.info()`."""

    def __init__(
        self, run_dir: Path, config: TrainConfig, model: GenerativeModel, checkpoint: Path, state: dict
    ):
        self.run_dir = run_dir
        self.config = config
        self.model = model  # the EMA weights when the run kept them
        self.checkpoint = checkpoint
        self.state = state  # state.json of the checkpoint: step, epoch, ...
        self.sampling_overrides: dict[str, Any] = {}  # what with_sampling changed from the saved config

    def with_sampling(self, **settings: Any) -> Run:
        """Change sampling-only settings of the loaded model (its `sampling_settings`, e.g. a GAN's
        `refine_steps=0` for plain G(z)), checked like `--set`; the weights stay. Returns self."""
        model_class = type(self.model)
        allowed = model_class.sampling_settings
        unknown = [key for key in settings if key not in allowed]
        if unknown:
            choices = ", ".join(allowed) if allowed else "none"
            raise ConfigError(
                f"{unknown[0]!r} is not a sampling setting of model {self.model.name!r} (its sampling "
                f"settings: {choices})"
            )
        values = {**dataclasses.asdict(self.model.config), **settings}
        self.model.config = model_class.make_config(values)
        self.sampling_overrides.update({key: getattr(self.model.config, key) for key in settings})
        return self

    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n images (N, C, H, W) in [0, 1]; the same seed gives the same images."""
        return self.model.sample(n, labels=labels, generator=torch.Generator().manual_seed(seed))

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> reconstructions in [0, 1] (autoencoders and VAEs)."""
        if not hasattr(self.model, "reconstruct"):
            raise ConfigError(f"model {self.model.name!r} cannot reconstruct: it has no encoder")
        self.model.eval()
        return self.model.reconstruct(images.to(self.model.device))

    def privacy(self) -> dict[str, Any] | None:
        """The DP accountant's summary at this checkpoint (epsilon spent, delta, ...), or None without DP."""
        summary = self.state.get("extra", {}).get("privacy")
        return {k: v for k, v in summary.items() if k != "history"} if summary else None

    def privacy_info(self) -> dict[str, Any]:
        summary = self.privacy()
        if summary is None:
            return {"dp_epsilon": None}
        return {"dp_epsilon": summary["epsilon"], "dp_delta": summary["delta"]}

    def info(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "model": self.model.name,
            "preset": self.config.preset,
            "data": self.config.data,
            "checkpoint": self.checkpoint.name,
            "step": self.state.get("step"),
            "epoch": self.state.get("epoch"),
            "parameters": self.model.num_parameters(),
            "weights": "ema" if (self.checkpoint / "ema.safetensors").is_file() else "model",
            **self.privacy_info(),
            "model_config": dataclasses.asdict(self.model.config),
            "train_config": self.config.to_dict(),
        }


def read_run_config(run_dir: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """config.json, schema-checked: `train` and `model_config` objects, a valid train config."""
    path = Path(run_dir) / CONFIG_FILE
    saved = read_json(path, expect=dict)
    for key in ("train", "model_config"):
        if key not in saved:
            raise CheckpointError(f"{path} is not a genlab run config: field {key!r} is missing")
        if not isinstance(saved[key], dict):
            raise CheckpointError(
                f"corrupt {path}: field {key!r} must be an object, not {type(saved[key]).__name__}"
            )
    if not isinstance(saved.get("data", {}), dict):
        raise CheckpointError(f"corrupt {path}: field 'data' must be an object")
    try:
        config = TrainConfig.from_dict(saved["train"])
        config.validate()
    except ConfigError as exc:
        raise CheckpointError(f"{path} is not a valid genlab run config: {exc}") from exc
    return config, saved["model_config"]


def load(run_dir: str | Path, device: str = "cpu") -> Run:
    """Load the newest checkpoint of a run; sampling uses the EMA weights when the run kept them."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        latest_checkpoint(run_dir)  # raises the precise error: no such dir, or not a run dir
    config, model_config = read_run_config(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    try:
        model = build_model(config.model, model_config)
    except GenlabError as exc:
        raise CheckpointError(f"{run_dir}/{CONFIG_FILE} does not describe a buildable model: {exc}") from exc
    if config.dp_epsilon > 0:  # the DP run's layer swaps (e.g. BatchNorm -> GroupNorm), exactly
        from .training.privacy import make_per_sample_compatible

        make_per_sample_compatible(model)
    ema_path = checkpoint / "ema.safetensors"
    weights_path = ema_path if ema_path.is_file() else checkpoint / "model.safetensors"
    load_model_weights(model, load_weights(weights_path), checkpoint)
    model.to(device).eval()
    return Run(run_dir, config, model, checkpoint, read_state(checkpoint))
