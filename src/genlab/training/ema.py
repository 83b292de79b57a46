"""Exponential moving average of a model's weights (Polyak averaging), used for sampling when enabled."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False).eval()
        self._targets = list(self.model.parameters())
        self._sources = list(model.parameters())

    def decay_at(self, step: int) -> float:
        """Warm-up: (1 + t) / (10 + t) until it reaches `decay`, so early averages are not dominated by the
        random initial weights (with 0.999 a short run would otherwise sample from near-initial weights)."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # ema <- decay * ema + (1 - decay) * current, in one fused call over all parameters
        torch._foreach_lerp_(self._targets, self._sources, 1.0 - self.decay_at(step))
        for target, source in zip(self.model.buffers(), model.buffers()):
            target.copy_(source)
