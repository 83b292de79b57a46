"""Model registry: `@register_model("vae")` makes a class reachable by name from the CLI and checkpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .models.base import GenerativeModel

_MODELS: dict[str, type[GenerativeModel]] = {}


def register_model(name: str):
    """Class decorator: register a GenerativeModel subclass under `name`."""

    def wrap(cls):
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered by {_MODELS[name].__name__}")
        cls.name = name
        _MODELS[name] = cls
        return cls

    return wrap


def _ensure_builtin_models_loaded() -> None:
    from . import models  # noqa: F401  (importing registers the built-in families)


def get_model_class(name: str) -> type[GenerativeModel]:
    _ensure_builtin_models_loaded()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def list_models() -> list[str]:
    _ensure_builtin_models_loaded()
    return sorted(_MODELS)
