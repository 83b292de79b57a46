"""Noise specs, seeded noise, and denoising through any autoencoder."""

from __future__ import annotations

import pytest
import torch

from genlab.errors import ConfigError, DataError
from genlab.runs import load
from genlab.uses import denoise


def test_parse_noise():
    assert denoise.parse_noise("gaussian:0.3") == denoise.Noise("gaussian", 0.3)
    assert str(denoise.parse_noise("mask:0.5")) == "mask:0.5"
    for bad in ("gaussian", "salt:0.1", "gaussian:x", "mask:1.5", "gaussian:-1"):
        with pytest.raises(ConfigError):
            denoise.parse_noise(bad)


def test_add_noise_is_seeded_and_matches_its_definition():
    clean = torch.full((4, 1, 8, 8), 0.5)
    a, b = denoise.add_noise(clean, "gaussian:0.1", seed=1), denoise.add_noise(clean, "gaussian:0.1", seed=1)
    assert torch.equal(a, b) and not torch.equal(a, denoise.add_noise(clean, "gaussian:0.1", seed=2))
    assert abs(float((a - clean).std()) - 0.1) < 0.02
    masked = denoise.add_noise(clean, "mask:0.25", seed=0)
    zeros = float((masked == 0).float().mean())
    assert 0.15 < zeros < 0.35 and set(masked.unique().tolist()) == {0.0, 0.5}


def test_denoise_with_ae_and_vae_but_not_gan(use_runs, mnist_small):
    images = mnist_small.images[:8].float() / 255.0
    for name in ("ae", "vae"):
        out = denoise.denoise(load(use_runs / name), denoise.add_noise(images, "gaussian:0.3"))
        assert out.shape == images.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    with pytest.raises(ConfigError, match="no encoder"):
        denoise.denoise(load(use_runs / "gan"), images)
    with pytest.raises(DataError, match="channel"):
        denoise.denoise(load(use_runs / "ae"), images.repeat(1, 3, 1, 1))
    with pytest.raises(DataError, match="resize"):
        denoise.denoise(load(use_runs / "ae"), images[:, :, :20, :20])
