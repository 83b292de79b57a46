"""Differential privacy for the one trainer: DP-SGD through Opacus, on the parts of a model that see data.

A model declares `private_parts()` -> {optimizer name: submodule}. For those optimizers each example's
gradient is clipped to `max_grad_norm` and Gaussian noise of std `noise_multiplier * max_grad_norm` is
added to their sum (Abadi et al. 2016); batches are Poisson-sampled with rate q = batch_size / N, which is
what the accountant assumes. Optimizers not listed (the GAN's generator) step normally: they see data only
through a private part, and post-processing keeps the guarantee.

Per-sample gradients come from Opacus' hooks, attached to the private submodules in place (no wrapper, so
the model's own code and state_dict are untouched). Hooks run only while a private optimizer's step is
computed: the GAN's G step backpropagates through a frozen D and must not record per-sample gradients.
The accountant is Opacus' RDP accountant; its history (sigma, q, steps) is saved as JSON in every
checkpoint and restored on resume, so epsilon continues where it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import CheckpointError, ConfigError
from ..models.base import Batch

ACCOUNTANT = "rdp"
# Opacus' default RDP orders stop at 63; small noise levels (large epsilon, short runs) need higher ones
# for a tight bound (Opacus warns "Optimal order is the largest alpha" otherwise).
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + list(range(64, 513, 8))


def require_opacus():
    """Import opacus, or say how to install it."""
    try:
        import opacus
    except ImportError as exc:
        raise ConfigError(
            "differential privacy needs Opacus: pip install 'genlab[dp]' (or pip install opacus)"
        ) from exc
    return opacus


def private_parts(model: nn.Module) -> dict[str, nn.Module]:
    """The model's private parts, or a clear error when it declares none."""
    try:
        parts = model.private_parts()
    except ValueError as exc:  # a model setting that DP-SGD cannot cover
        raise ConfigError(str(exc)) from exc
    if not parts:
        raise ConfigError(
            f"model {model.name!r} does not declare which of its networks see the data, so it cannot "
            "train with differential privacy; drop --dp-epsilon"
        )
    return parts


def make_per_sample_compatible(model: nn.Module, log: Callable[[str], None] | None = None) -> list[str]:
    """Replace, in place, the layers of the private parts whose output for one example depends on the
    others in its batch, and return one message per replacement (also passed to `log`):
    - BatchNorm -> GroupNorm (Opacus' ModuleValidator fixer);
    - a layer marked `mixes_samples` -> its `per_sample_replacement()`, or a ConfigError if it has none.
    Deterministic, so loading a DP run rebuilds the same network. Call it before creating optimizers."""
    require_opacus()
    from opacus.validators import ModuleValidator

    messages = []
    for part_name, part in private_parts(model).items():
        for path, parent in list(part.named_modules()):
            for child_name, child in list(parent.named_children()):
                where = f"{part_name}: {path + '.' if path else ''}{child_name}"
                replacement = None
                if getattr(child, "mixes_samples", False):
                    if not hasattr(child, "per_sample_replacement"):
                        raise ConfigError(
                            f"{where} ({type(child).__name__}) mixes the examples of a batch, so DP-SGD's "
                            "per-example gradients are undefined; turn that layer off for DP training"
                        )
                    replacement = child.per_sample_replacement()
                elif type(child) in ModuleValidator.FIXERS:
                    replacement = ModuleValidator.FIXERS[type(child)](child)
                if replacement is not None:
                    parent._modules[child_name] = replacement.to(_device_of(child, model))
                    mixes = getattr(child, "mixes_samples", False) or isinstance(child, _BatchNorm)
                    reason = "it mixes the examples of a batch" if mixes else "Opacus needs its own version"
                    messages.append(
                        f"DP: replaced {where} {type(child).__name__} with {_describe(replacement)} ({reason})"
                    )
        _refuse_layers_with_buffers(model.name, part_name, part)  # before any message: one-line errors
    for message in messages:
        if log:
            log(message)
    return messages


def _device_of(module: nn.Module, model: nn.Module) -> torch.device:
    tensor = next(iter([*module.parameters(), *module.buffers()]), None)
    return tensor.device if tensor is not None else next(model.parameters()).device


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.GroupNorm):
        return f"GroupNorm({module.num_groups} groups)"
    return type(module).__name__


def uncovered_data_uses(model: nn.Module) -> list[str]:
    """What a model does with training data outside DP-SGD, which epsilon therefore does not cover."""
    if model.fits_sampler_to_data():
        return [
            f"{model.name}'s sampler is fitted to training images after each epoch without noise: "
            "epsilon covers the trained weights, not that fit (nor samples drawn from it)"
        ]
    return []


def noise_multiplier_for(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise std (in units of the clipping norm) that spends exactly `epsilon` in `steps` steps."""
    require_opacus()
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(
            get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=ACCOUNTANT,
                alphas=RDP_ORDERS,
            )
        )
    except ValueError as exc:
        raise ConfigError(f"no noise level reaches epsilon {epsilon} at delta {delta}: {exc}") from exc


class PrivateTraining:
    """DP-SGD state of one training run: hooks on the private parts, DP optimizers, the accountant."""

    def __init__(
        self,
        model: nn.Module,
        optimizers: dict[str, torch.optim.Optimizer],
        *,
        epsilon: float,
        delta: float,
        max_grad_norm: float,
        sample_rate: float,
        expected_batch_size: int,
        planned_steps: int,
        noise_multiplier: float | None = None,
    ):
        require_opacus()
        from opacus.accountants import RDPAccountant
        from opacus.grad_sample import GradSampleHooks
        from opacus.optimizers import DPOptimizer

        # Opacus' hooks on a first layer whose input needs no gradient make torch warn on every backward;
        # harmless (the hook only needs the layer's output gradient), and it would flood the console.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
        parts = private_parts(model)
        unknown = sorted(set(parts) - set(optimizers))
        if unknown:
            raise ConfigError(f"model {model.name!r} declares private parts for unknown optimizers {unknown}")
        self.epsilon_target, self.delta, self.max_grad_norm = epsilon, delta, max_grad_norm
        self.sample_rate = sample_rate
        self.expected_batch_size = expected_batch_size
        self.num_classes = max(int(getattr(model.config, "num_classes", 1)), 1)
        self.planned_steps = planned_steps * len(parts)  # each private optimizer step is one mechanism use
        if noise_multiplier is None:
            noise_multiplier = noise_multiplier_for(epsilon, delta, sample_rate, self.planned_steps)
        self.noise_multiplier = noise_multiplier
        self.notes = uncovered_data_uses(model)
        self.accountant = RDPAccountant()
        self.hooks: dict[str, Any] = {}
        self.optimizers = dict(optimizers)
        for name, part in parts.items():
            _check_optimizer_covers(name, part, optimizers[name])
            _refuse_layers_with_buffers(model.name, name, part)
            self.hooks[name] = GradSampleHooks(part, batch_first=True, loss_reduction="mean", strict=True)
            self.hooks[name].disable_hooks()
            dp_optimizer = DPOptimizer(
                optimizers[name],
                noise_multiplier=noise_multiplier,
                max_grad_norm=max_grad_norm,
                expected_batch_size=expected_batch_size,
                loss_reduction="mean",
            )
            dp_optimizer.attach_step_hook(self._count_step)
            self.optimizers[name] = dp_optimizer

    def _count_step(self, optimizer) -> None:
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    def hooks_modules(self) -> list[nn.Module]:
        """Every module inside the private parts (what per-example gradients flow through)."""
        return [m for hooks in self.hooks.values() for m in hooks._module.modules()]

    def select(self, optimizer_name: str) -> None:
        """Record per-example gradients only for the part this optimizer trains (none for the others)."""
        for name, hooks in self.hooks.items():
            if name == optimizer_name:
                hooks.enable_hooks()
            else:
                hooks.disable_hooks()

    def empty_batch_step(self, name: str) -> None:
        """A Poisson batch with no examples: the private optimizer still takes its noise-only step (the
        accountant counts it, as the analysis assumes)."""
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        for param in optimizer.params:
            param.grad_sample = param.new_zeros((0, *param.shape))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def batch_for(self, optimizer_name: str, batch: Batch) -> Batch:
        """The real batch for a private optimizer; for the others a data-free stand-in of the expected
        batch size (zero images, labels drawn uniformly), so they never read the data, its labels, or even
        how many examples the Poisson draw picked (the GAN's G: only D's output reaches it)."""
        if optimizer_name in self.hooks:
            return batch
        n = self.expected_batch_size
        images = batch.images.new_zeros((n, *batch.images.shape[1:]))
        labels = None
        if batch.labels is not None:
            labels = torch.randint(self.num_classes, (n,)).to(batch.labels.device)
        return Batch(images, labels)

    def epsilon(self) -> float:
        """Epsilon spent so far at this run's delta (0 before the first step)."""
        if not self.accountant.history:
            return 0.0
        return float(self.accountant.get_epsilon(delta=self.delta, alphas=RDP_ORDERS))

    def summary(self) -> dict[str, Any]:
        """What `genlab info` and eval reports show."""
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "target_epsilon": self.epsilon_target,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": sum(steps for _, _, steps in self.accountant.history),
            "planned_steps": self.planned_steps,
            "accountant": ACCOUNTANT,
            "private_parts": sorted(self.hooks),
            "notes": self.notes,
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-able: the summary plus the accountant's history [(sigma, q, steps), ...]."""
        return {**self.summary(), "history": [list(entry) for entry in self.accountant.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a checkpointed run: its accountant history and its noise level (calibrated for the
        run's original plan; training past that plan spends more than the target epsilon)."""
        try:
            history = [(float(s), float(q), int(n)) for s, q, n in state["history"]]
            noise_multiplier = float(state["noise_multiplier"])
            planned_steps = int(state["planned_steps"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError("the checkpoint's DP accountant state is incomplete") from exc
        self.accountant.history = history
        self.noise_multiplier, self.planned_steps = noise_multiplier, planned_steps
        for name in self.hooks:
            self.optimizers[name].noise_multiplier = noise_multiplier


def _check_optimizer_covers(name: str, part: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The DP optimizer needs per-example gradients for every weight it updates."""
    in_part = {id(p) for p in part.parameters() if p.requires_grad}
    stepped = [p for group in optimizer.param_groups for p in group["params"]]
    if any(id(p) not in in_part for p in stepped):
        raise ConfigError(f"optimizer {name!r} updates weights outside its declared private part")


def _refuse_layers_with_buffers(model_name: str, part_name: str, part: nn.Module) -> None:
    """Opacus' strict check, with a message that names the layer: a weighted layer that also keeps state
    (spectral norm's power-iteration vectors, BatchNorm statistics) has no per-example gradient."""
    from opacus.utils.module_utils import trainable_modules

    for path, module in trainable_modules(part):
        if next(module.buffers(), None) is not None:
            raise ConfigError(
                f"Opacus cannot compute per-example gradients for {model_name}'s {part_name!r} part: layer "
                f"{path} ({type(module).__name__}) keeps buffers (spectral norm?); turn it off for DP training"
            )


def restore(privacy: PrivateTraining, extra: dict[str, Any]) -> None:
    """Continue the accountant from a checkpoint's state.json `extra`; a DP run's checkpoint must have it."""
    if "privacy" not in extra:
        raise CheckpointError(
            "cannot resume with DP: the checkpoint was written without differential privacy"
        )
    privacy.load_state_dict(extra["privacy"])
