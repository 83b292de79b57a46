"""The autoencoder's blind denoising mode: each image draws its own noise level up to the configured one."""

from __future__ import annotations

import torch

from genlab.models.ae import AEConfig, Autoencoder


def test_noise_uniform_draws_one_level_per_image():
    model = Autoencoder(AEConfig(latent_dim=4, hidden=(8,), noise_std=0.0, mask_prob=0.8, noise_uniform=True))
    torch.manual_seed(0)
    x = torch.ones(400, 1, 8, 8)
    masked_share = (model.corrupt(x) == 0).float().flatten(1).mean(dim=1)  # (400,) one share per image
    assert 0.0 <= float(masked_share.min()) < 0.1 and 0.7 < float(masked_share.max()) <= 0.9
    assert abs(float(masked_share.mean()) - 0.4) < 0.05  # uniform on [0, 0.8] has mean 0.4
    fixed = Autoencoder(AEConfig(latent_dim=4, hidden=(8,), mask_prob=0.8))
    assert float((fixed.corrupt(x) == 0).float().flatten(1).mean(dim=1).std()) < 0.1


def test_noise_uniform_gaussian_levels_vary_between_images():
    model = Autoencoder(AEConfig(latent_dim=4, hidden=(8,), noise_std=0.4, noise_uniform=True))
    torch.manual_seed(0)
    x = torch.full((300, 1, 16, 16), 0.5)
    stds = (model.corrupt(x) - x).flatten(1).std(dim=1)
    assert float(stds.min()) < 0.05 and float(stds.max()) > 0.3
