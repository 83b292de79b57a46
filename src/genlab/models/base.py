"""The one model interface every family implements (see ARCHITECTURE.md).

A model owns its objective and its sampling. The trainer calls `training_step(batch, name)` once per
optimizer returned by `optimizers()`, in order, and does backward and the optimizer step itself. Models
never touch devices, files, mixed precision or process groups.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

InputRange = Literal["tanh", "unit"]


@dataclass
class Batch:
    images: Tensor  # (B, C, H, W) float, already in the model's input range
    labels: Tensor | None = None  # (B,) int64, or None for unlabeled data


@dataclass
class StepOutput:
    loss: Tensor  # scalar the trainer backpropagates
    logs: dict[str, float] = field(default_factory=dict)  # detached figures for progress and metrics.jsonl


@dataclass(frozen=True)
class Preset:
    """A named recipe: overrides of the model Config and of the training config."""

    description: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Fields every family's Config has. The trainer fills the data-derived ones from the dataset."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W)
    num_classes: int = 10
    latent_dim: int = 32


class GenerativeModel(nn.Module):
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    name: ClassVar[str] = ""  # set by @register_model
    presets: ClassVar[dict[str, Preset]] = {}
    input_range: ClassVar[InputRange] = "unit"  # tanh models see data in [-1, 1], unit models in [0, 1]

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    # --- what every family implements -------------------------------------------------------------
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def training_step(self, batch: Batch, optimizer_name: str) -> StepOutput:
        raise NotImplementedError

    def private_parts(self) -> dict[str, nn.Module]:
        """{optimizer name: the submodule whose weights that optimizer trains on real data}, for
        differential privacy (DP-SGD clips and noises exactly these). Optimizers not listed never see
        data, or see it only through a listed part (post-processing). Empty: DP is not available."""
        return {}

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw (n, latent_dim) codes from the model's prior, on CPU from `generator` for reproducibility."""
        return torch.randn(n, self.config.latent_dim, generator=generator).to(self.device)

    def generate(self, z: Tensor) -> Tensor:
        """Map latent codes to images (N, C, H, W) in [0, 1]."""
        raise NotImplementedError

    def interpolate_latents(self, a: Tensor, b: Tensor, t: Tensor) -> Tensor:
        """Codes along a path from a to b (d,) at fractions t (T,) -> (T, d). Spherical for the
        Gaussian prior, whose mass sits on a shell that a straight line would cut through."""
        from ..viz import slerp

        return slerp(a, b, t)

    # --- shared behaviour --------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """n images (N, C, H, W) in [0, 1]; the same generator seed gives the same images."""
        if labels is not None:
            raise ValueError(f"model {self.name!r} is unconditional; it takes no labels")
        was_training = self.training
        self.eval()
        try:
            return self.generate(self.sample_latent(n, generator))
        finally:
            self.train(was_training)

    def fit_sampler(self, images: Tensor) -> None:
        """Called by the trainer after each epoch with training images; models whose prior is learned
        from data (the autoencoder's Gaussian mixture) fit it here. Default: nothing to fit."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @classmethod
    def from_uint8(cls, images: Tensor) -> Tensor:
        """uint8 images (any shape) -> float in this family's input range."""
        unit = images.float() / 255.0
        return unit * 2.0 - 1.0 if cls.input_range == "tanh" else unit

    @classmethod
    def make_config(cls, values: dict[str, Any] | None = None) -> ModelConfig:
        """Build the Config from a dict (a saved config.json, a preset, `--set model.x=...` strings),
        converting each value to its field's type, with a clear error for unknown fields (typos)."""
        from ..config import coerce_value
        from ..errors import ConfigError

        values = dict(values or {})
        defaults = cls.Config()
        known = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown {cls.name} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        typed = {
            key: coerce_value(f"model.{key}", value, getattr(defaults, key)) for key, value in values.items()
        }
        return cls.Config(**typed)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
