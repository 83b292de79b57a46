"""Shared building blocks."""

from .mlp import mlp

__all__ = ["mlp"]
