"""Shared building blocks."""

from .conv import ConvUpsampler, conv_encoder
from .mlp import mlp

__all__ = ["ConvUpsampler", "conv_encoder", "mlp"]
