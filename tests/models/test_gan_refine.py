"""The GAN's D-driven refinement of its codes at sampling time (refine_steps, DDLS with a weighted D)."""

from __future__ import annotations

import math

import torch
from torch import nn

from genlab.runs import build_model

TINY = {"image_shape": (1, 8, 8), "latent_dim": 3, "g_hidden": (16,), "d_hidden": (16,)}


class _LinearG(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, z, labels=None):
        return (z @ self.weight).view(len(z), 1, 8, 8)


class _LinearD(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, images, labels=None):
        return images.flatten(1) @ self.weight


def test_one_step_is_the_langevin_update_of_the_stated_energy():
    # G(z) = z W and d(x) = x . v, so d(G(z)) = z . (W v) and E(z) = |z|^2 / 2 - w z . (W v):
    # grad E = z - w W v, and z1 = z0 - s/2 grad E + sqrt(s) eps, eps from the caller's generator.
    model = build_model("gan", {**TINY, "refine_steps": 1, "refine_step_size": 0.04, "refine_d_weight": 2.5})
    g_weight, d_weight = torch.randn(3, 64), torch.randn(64)
    model.generator, model.discriminator = _LinearG(g_weight), _LinearD(d_weight)
    z0 = torch.randn(5, 3)
    refined = model.refine_latent(z0, None, torch.Generator().manual_seed(7))
    eps = torch.randn(5, 3, generator=torch.Generator().manual_seed(7))
    expected = z0 - 0.02 * (z0 - 2.5 * (g_weight @ d_weight)) + math.sqrt(0.04) * eps
    torch.testing.assert_close(refined, expected)
    assert all(p.grad is None for p in model.parameters())  # sampling never leaves gradients on weights


def test_refinement_raises_d_score_and_keeps_the_codes_near_their_draw():
    torch.manual_seed(0)
    model = build_model("gan", {**TINY, "refine_steps": 30, "refine_step_size": 1e-3}).eval()
    z0 = torch.randn(256, 3)
    refined = model.refine_latent(z0, None, torch.Generator().manual_seed(1))
    # 30 steps of noise sqrt(1e-3) are a spread of about 0.17 per dimension: the codes move, locally
    assert 0.05 < (refined - z0).norm(dim=1).mean() < 0.5 * z0.norm(dim=1).mean()
    # an untrained D's logit barely changes with z, so a large weight makes its pull visible
    model.config.refine_d_weight = 1e4
    pulled = model.refine_latent(z0, None, torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model.discriminator(model.generator(z0))
        after = model.discriminator(model.generator(pulled))
    assert after.mean() > before.mean() + before.std()  # D now scores them as far more real


def test_sample_is_seeded_and_zero_steps_is_plain_generation():
    plain = build_model("gan", TINY)
    refined = build_model("gan", {**TINY, "refine_steps": 5})
    refined.load_state_dict(plain.state_dict())
    a = refined.sample(10, generator=torch.Generator().manual_seed(3))
    b = refined.sample(10, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    base = plain.sample(10, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = plain.generate(plain.sample_latent(10, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(base, expected)
    assert not torch.allclose(a, base)
    assert refined.sample(0).shape == (0, 1, 8, 8)


def test_a_conditional_gan_refines_its_codes_for_the_asked_labels():
    settings = {**TINY, "conditional": True, "num_classes": 3, "refine_steps": 2}
    model = build_model("gan", {**settings, "refine_d_weight": 1e4})
    labels = torch.tensor([0, 1, 2, 1])
    images = model.sample(4, labels=labels, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        images, model.sample(4, labels=labels, generator=torch.Generator().manual_seed(3))
    )
    z0 = torch.randn(4, 3)
    # D's projection term depends on the label, so the pull on the same codes does too
    a = model.refine_latent(z0, labels, torch.Generator().manual_seed(1))
    b = model.refine_latent(z0, torch.tensor([2, 2, 0, 0]), torch.Generator().manual_seed(1))
    assert not torch.allclose(a, b)


def test_the_default_preset_refines_and_the_mlp_preset_does_not():
    from genlab.models.gan import PRESETS

    assert PRESETS["default"].model["refine_steps"] > 0
    assert PRESETS["mlp"].model.get("refine_steps", 0) == 0
    # the same training: only sampling differs (and so how often the refined grids are drawn)
    assert {**PRESETS["default"].train, "grid_every": 1} == {**PRESETS["mlp"].train, "grid_every": 1}
    assert PRESETS["long"].model["refine_steps"] > 0 and PRESETS["long"].train["grid_every"] > 1
