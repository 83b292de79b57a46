"""The trainer's speed levers, in one place: optimizer implementation, mixed precision, torch.compile.

Each lever is kept only where benchmarks/speed.py measured a win (the README's lever table); none of them
changes the training math beyond float rounding, and a fixed seed gives the same run twice.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")

# Switched off by benchmarks/speed.py to measure what each lever gives; always on in training.
LEVERS = {"fused_optimizers": True}
_DEFAULT_LEVERS = dict(LEVERS)


def set_levers(**values: bool) -> None:
    """Reset the levers to their defaults, then apply `values` (benchmarks and tests only)."""
    unknown = set(values) - set(_DEFAULT_LEVERS)
    if unknown:
        raise ValueError(f"unknown speed lever(s): {', '.join(sorted(unknown))}")
    LEVERS.clear()
    LEVERS.update(_DEFAULT_LEVERS, **values)


def fast_optimizers(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, torch.optim.Optimizer]:
    """The same optimizers rebuilt with torch's fused implementation where it has one (Adam, AdamW on
    float CPU/CUDA tensors): one kernel per step over all parameters instead of a loop over them. Same
    update formula, same hyperparameters; called before any step, so there is no state to carry."""
    if not LEVERS["fused_optimizers"]:
        return optimizers
    return {name: _fused(optimizer) for name, optimizer in optimizers.items()}


def _fused(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or optimizer.state:
        return optimizer
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params or any(p.device.type not in ("cpu", "cuda") or not p.is_floating_point() for p in params):
        return optimizer
    groups = [
        {key: value for key, value in group.items() if key not in ("fused", "foreach")}
        for group in optimizer.param_groups
    ]
    for group in groups:
        group["fused"] = True
    return type(optimizer)(groups)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass (matmuls and convs in bfloat16, reductions and losses in
    float32; no loss scaling needed, unlike fp16); fp32 is a no-op."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def compile_networks(model: nn.Module, device: torch.device, **options) -> list[str]:
    """torch.compile each of the model's networks (its direct submodules with weights) in place, so
    parameter names, checkpoints and optimizers are untouched. On CUDA, mode "reduce-overhead" also
    replays CUDA graphs where the shapes are static (fixed batch size). `options` go to torch.compile
    (tests pass backend="eager"). Returns the compiled names."""
    options.setdefault("mode", "reduce-overhead" if device.type == "cuda" else None)
    compiled = []
    for name, module in model.named_children():
        if any(True for _ in module.parameters()):
            module.compile(**options)
            compiled.append(name)
    return compiled
