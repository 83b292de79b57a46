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

from ..constraints import MAX_CLASSES, MAX_WIDTH, Check, Sizes, at_least
from ..errors import DataError

InputRange = Literal["tanh", "unit"]
ARCHS = ("mlp", "conv")  # the network kinds every family offers (nn/mlp.py, nn/conv.py)


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
    # Valid values of each field (see constraints.py); each family's Config extends this table.
    constraints: ClassVar[dict[str, Check]] = {
        "image_shape": Sizes(length=3),
        "num_classes": at_least(1, MAX_CLASSES),
        "latent_dim": at_least(1, MAX_WIDTH),
    }


class MissingLabelsError(DataError, ValueError):
    """A conditional model was given a batch without class labels: the dataset has none."""


class GenerativeModel(nn.Module):
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    name: ClassVar[str] = ""  # set by @register_model
    presets: ClassVar[dict[str, Preset]] = {}
    setting_help: ClassVar[dict[str, str]] = {}  # Config field -> one line on why to change it
    # Config fields that only change how a trained model samples (not its weights): `genlab sample` and
    # `genlab eval` take them as `--sampling key=value`, and `Run.with_sampling` in the API.
    sampling_settings: ClassVar[tuple[str, ...]] = ()
    input_range: ClassVar[InputRange] = "unit"  # tanh models see data in [-1, 1], unit models in [0, 1]

    def __init__(self, config: ModelConfig):
        from ..constraints import check_config

        super().__init__()
        check_config(config, prefix="model.")  # also when a Config is built by hand, not by make_config
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

    def refine_latent(
        self, z: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """`sample`'s last say on its codes (for these labels, if conditional) before they are decoded
        (a GAN's D-driven refinement); noise comes from `generator`. Default: the codes as drawn."""
        return z

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Map latent codes (and, for a conditional model, class labels (N,)) to images (N, C, H, W) in
        [0, 1]."""
        raise NotImplementedError

    @property
    def is_conditional(self) -> bool:
        """Whether the model generates a requested class (its `sample` and `generate` take labels)."""
        return False

    def validate_labels(self, labels: Tensor | None, n: int) -> Tensor | None:
        """Labels for n images checked against this model: None for an unconditional model (which must
        get none), else (n,) int64 in [0, num_classes) on the model's device."""
        if not self.is_conditional:
            if labels is not None:
                raise ValueError(f"model {self.name!r} is unconditional; it takes no labels")
            return None
        classes = self.config.num_classes
        if labels is None:
            raise ValueError(
                f"model {self.name!r} is conditional: pass labels, (n,) class indices in [0, {classes})"
            )
        labels = torch.as_tensor(labels)
        if labels.shape != (n,) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(
                f"labels must be ({n},) integer class indices, got {tuple(labels.shape)} {labels.dtype}"
            )
        if n and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ValueError(
                f"labels must be in [0, {classes}), got {int(labels.min())}..{int(labels.max())}"
            )
        return labels.long().to(self.device)

    def training_labels(self, batch: Batch) -> Tensor | None:
        """The batch's labels for a conditional model (a clear error when the data has none), else None."""
        if not self.is_conditional:
            return None
        if batch.labels is None:
            raise MissingLabelsError(
                f"model {self.name!r} is conditional but the dataset has no class labels; "
                "train it on labelled data or set conditional=false"
            )
        return batch.labels

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
        """n images (N, C, H, W) in [0, 1]; the same generator seed gives the same images. A conditional
        model draws labels uniformly from `generator` when none are given (after the codes, so the same
        seed gives the same codes with or without labels)."""
        labels = self.validate_labels(labels, n) if labels is not None or not self.is_conditional else None
        was_training = self.training
        self.eval()
        try:
            z = self.sample_latent(n, generator)
            if not self.is_conditional:
                return self.generate(self.refine_latent(z, None, generator))
            if labels is None:
                labels = torch.randint(self.config.num_classes, (n,), generator=generator).to(self.device)
            return self.generate(self.refine_latent(z, labels, generator), labels)
        finally:
            self.train(was_training)

    def fits_sampler_to_data(self) -> bool:
        """Whether fit_sampler learns from the training images (differential privacy does not cover it)."""
        return type(self).fit_sampler is not GenerativeModel.fit_sampler

    def fit_sampler(self, images: Tensor, labels: Tensor | None = None) -> None:
        """Called by the trainer after each epoch with the training images (and their labels, or None);
        models whose sampler is learned from data (the autoencoder's Gaussian mixture, a VAE's optional
        one) fit it here. Default: nothing to fit."""

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
        converting each value to its field's type and checking it against the Config's constraints and
        the family's `check_settings`: a typo, a wrong type or a value out of range is a ConfigError here,
        before any data loads or tensor is made."""
        from ..constraints import check_config, coerce_value
        from ..errors import ConfigError

        if not isinstance(values, (dict, type(None))):
            raise ConfigError(f"{cls.name} settings must be a mapping, got {type(values).__name__}")
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
        config = cls.Config(**typed)
        check_config(config, prefix="model.")
        try:
            cls.check_settings(config)
        except ValueError as exc:
            raise ConfigError(f"bad {cls.name} settings: {exc}") from exc
        return config

    @classmethod
    def check_settings(cls, config: ModelConfig) -> None:
        """Rules that tie settings together (e.g. wgan-gp without BatchNorm in D): a ValueError with the
        fix. Single-field ranges and choices belong in the Config's `constraints` table instead."""

    def upgrade_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Weights saved by an older genlab -> this version's names (loading calls it before strict
        loading, so runs trained earlier keep working). Default: already current."""
        return state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
