"""The GAN's discriminator rejection sampling (the `rejection` sampling setting, Azadi et al. 2019)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.evaluation.evaluate import sample_images
from genlab.models import gan as gan_module
from genlab.runs import build_model

TINY = {"image_shape": (1, 8, 8), "latent_dim": 2, "g_hidden": (16,), "d_hidden": (16,)}


class _CodeG(nn.Module):
    """G(z) writes z into the first pixels, so a test D can read the code back from the image."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # the model's device is its parameters'

    def forward(self, z, labels=None):
        images = torch.zeros(len(z), 1, 8, 8)
        images.view(len(z), -1)[:, : z.shape[1]] = z
        return images


class _LogitD(nn.Module):
    """d(x) = slope * (first pixel) + shift[label]: a known density ratio exp(d) against N(0, I)."""

    def __init__(self, slope: float, shift: torch.Tensor | None = None):
        super().__init__()
        self.slope, self.shift = slope, shift

    def forward(self, images, labels=None):
        logits = self.slope * images.flatten(1)[:, 0]
        return logits if labels is None else logits + self.shift[labels]


def _model(slope: float, shift: torch.Tensor | None = None, **settings):
    model = build_model("gan", {**TINY, "rejection": True, **settings}).eval()
    model.generator, model.discriminator = _CodeG(), _LogitD(slope, shift)
    return model


def test_kept_codes_follow_g_density_times_the_ratio():
    # z ~ N(0, 1) per dimension and d = z0: p(z) exp(z0) is N(1, 1) in z0 and N(0, 1) in z1
    model = _model(slope=1.0)
    z = model.refine_latent(
        torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)),
        None,
        torch.Generator().manual_seed(1),
    )
    assert z.shape == (4000, 2)
    assert abs(z[:, 0].mean() - 1.0) < 0.08 and abs(z[:, 0].std() - 1.0) < 0.08
    assert abs(z[:, 1].mean()) < 0.08 and abs(z[:, 1].std() - 1.0) < 0.08
    # the plain draws are N(0, 1): the shift of about one standard deviation is the rejection's doing
    assert abs(z[:, 0].mean() - z[:, 1].mean()) > 0.8


def test_the_ceiling_is_the_highest_logit_of_a_fixed_pool():
    model = _model(slope=1.0)
    pool = torch.randn(gan_module.REJECTION_POOL, 2, generator=torch.Generator().manual_seed(0))
    assert model.rejection_ceiling() == pytest.approx(float(pool[:, 0].max()))
    assert model.rejection_ceiling() == model.rejection_ceiling()  # the same pool on every call


def test_accepted_codes_of_the_first_draw_are_kept_as_drawn():
    # with d = z0 about 5% of the caller's codes pass (exp(z0 - M), M about 3.5), the higher z0 the likelier
    model = _model(slope=1.0)
    z0 = torch.randn(600, 2, generator=torch.Generator().manual_seed(0))
    z = model.refine_latent(z0, None, torch.Generator().manual_seed(1))
    kept = (z == z0).all(dim=1)
    assert 5 <= kept.sum() <= 100
    assert z0[kept, 0].mean() > z0[~kept, 0].mean() + 0.5
    assert (z[~kept] != z0[~kept]).all()  # the others were drawn again


def test_seeded_chunk_invariant_and_combined_with_refinement():
    model = _model(slope=1.0)
    first = sample_images(model, 40, seed=3, chunk=40)
    again = sample_images(model, 40, seed=3, chunk=40)
    torch.testing.assert_close(first, again)
    # the ceiling is the weights' own, so a caller's split only changes which draws each chunk gets
    assert sample_images(model, 10, seed=3, chunk=40).shape == (10, 1, 8, 8)
    refined = _model(slope=1.0, refine_steps=2, refine_step_size=0.1)
    assert not torch.allclose(sample_images(refined, 40, seed=3, chunk=40), first)


def test_a_conditional_gan_rejects_per_asked_label():
    # class 1's logits sit 3 below class 0's, so the ceiling (from class 0's samples) rejects class 1 more,
    # yet every slot keeps its label and gets a code
    shift = torch.tensor([0.0, -3.0])
    model = _model(slope=1.0, shift=shift, conditional=True, num_classes=2)
    labels = torch.tensor([0, 1] * 200)
    z = model.refine_latent(
        torch.randn(400, 2, generator=torch.Generator().manual_seed(0)),
        labels,
        torch.Generator().manual_seed(1),
    )
    assert z.shape == (400, 2)
    for k in (0, 1):  # within a class the shift is a constant: each class's codes are N(1, 1) in z0
        assert abs(z[labels == k, 0].mean() - 1.0) < 0.2


def test_rejection_that_cannot_finish_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(gan_module, "REJECTION_MAX_DRAWS", 2)
    model = _model(slope=1e4)  # exp(d - M) underflows for every code but the pool's best
    with pytest.raises(ConfigError, match="rejection=false"):
        model.refine_latent(torch.randn(5, 2), None, torch.Generator().manual_seed(1))


def test_rejection_leaves_no_gradients_and_off_means_plain_codes():
    model = _model(slope=1.0)
    model.generator = build_model("gan", TINY).generator  # real weights, to see that none get a gradient
    model.refine_latent(torch.randn(8, 2), None, torch.Generator().manual_seed(1))
    assert all(p.grad is None for p in model.parameters())
    model.config.rejection = False
    z0 = torch.randn(8, 2)
    torch.testing.assert_close(model.refine_latent(z0, None, torch.Generator().manual_seed(1)), z0)


def test_the_ceiling_is_computed_once_per_set_of_weights(monkeypatch):
    # real weights: the pool is scored once for many sample() calls, and again after any change to the
    # weights, the buffers or the train/eval mode, even one made through `.data` (no tensor version)
    model = build_model("gan", {**TINY, "rejection": True, "g_batch_norm": True}).eval()
    scored = []
    pool_ceiling = model._pool_ceiling
    monkeypatch.setattr(model, "_pool_ceiling", lambda: scored.append(1) or pool_ceiling())
    first = model.rejection_ceiling()
    sample_images(model, 60, seed=0, chunk=20)
    assert len(scored) == 1 and model.rejection_ceiling() == first

    weight = next(model.discriminator.parameters())
    weight.data.add_(0.5)
    changed = model.rejection_ceiling()
    assert len(scored) == 2 and changed != first
    fresh = build_model("gan", {**TINY, "rejection": True, "g_batch_norm": True}).eval()
    fresh.load_state_dict(model.state_dict())
    assert fresh.rejection_ceiling() == pytest.approx(changed)  # the cache holds what a fresh model computes

    weight.data.sub_(0.5)
    assert model.rejection_ceiling() == pytest.approx(first) and len(scored) == 3
    model.load_state_dict(fresh.state_dict())
    assert model.rejection_ceiling() == pytest.approx(changed) and len(scored) == 4
    model.train()
    model.rejection_ceiling()
    assert len(scored) == 5
