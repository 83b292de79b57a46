"""Settings: `--set` shorthand routing and type coercion."""

from __future__ import annotations

import pytest

from genlab.config import parse_overrides, route_overrides
from genlab.errors import ConfigError
from genlab.runs import resolve_config


def test_unknown_training_keys_are_model_settings():
    routed = route_overrides(parse_overrides(["epochs=3", "lr_d=1e-4", "model.beta1=0.4", "preset=article"]))
    assert routed == {"epochs": "3", "model.lr_d": "1e-4", "model.beta1": "0.4", "preset": "article"}
    config = resolve_config(overrides={"model": "gan", **routed})
    assert config.epochs == 3 and config.model_args["lr_d"] == 1e-4 and config.model_args["beta1"] == 0.4


def test_a_typo_is_still_an_error():
    with pytest.raises(ConfigError, match="unknown gan setting"):
        resolve_config(overrides={"model": "gan", **route_overrides({"epoch": "3"})})
