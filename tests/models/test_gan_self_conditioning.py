"""Self-conditioning (model.pseudo_classes): online k-means clusters of the real images stand in for
labels while training, and a sample's cluster is drawn from z with the clusters' training shares."""

from __future__ import annotations

import pytest
import torch

from genlab.errors import ConfigError
from genlab.models.base import Batch
from genlab.runs import build_model

SHAPE = (1, 16, 16)
NETS = {"arch": "conv", "latent_dim": 4, "g_width": 4, "d_width": 4, "g_batch_norm": True, "d_dropout": 0.0}


def model_with(clusters: int, **settings):
    torch.manual_seed(0)
    return build_model("gan", {**NETS, "pseudo_classes": clusters, **settings, "image_shape": SHAPE})


def test_online_k_means_finds_two_separated_groups_and_their_means():
    model = model_with(2)
    dark = -1.0 + 0.1 * torch.rand(12, *SHAPE)
    bright = 1.0 - 0.1 * torch.rand(12, *SHAPE)
    images = torch.cat([dark[:3], bright[:3], dark[3:], bright[3:]])  # both groups in the first batch
    for batch in images.split(6):
        model.training_step(Batch(batch), "d")
    with torch.no_grad():  # outside a training step: assigned, not learned from
        clusters = model.training_labels(Batch(torch.cat([dark, bright])))
    assert clusters[:12].unique().numel() == 1 and clusters[12:].unique().numel() == 1
    assert clusters[0] != clusters[12]
    dark_cluster, bright_cluster = int(clusters[0]), int(clusters[12])
    assert model.cluster_counts.tolist() == [12.0, 12.0]
    torch.testing.assert_close(model.cluster_centers[dark_cluster], dark.flatten(1).mean(0))
    torch.testing.assert_close(model.cluster_centers[bright_cluster], bright.flatten(1).mean(0))


def test_d_and_g_steps_on_one_batch_update_the_clusters_once():
    model = model_with(3)
    batch = Batch(torch.rand(8, *SHAPE) * 2 - 1)
    model.training_step(batch, "d")
    model.training_step(batch, "g")
    assert model.cluster_counts.sum() == 8


def test_samples_draw_clusters_with_their_training_shares_as_a_function_of_z():
    model = model_with(3).eval()
    model.cluster_counts.copy_(torch.tensor([1.0, 3.0, 6.0]))
    z = model.sample_latent(20_000, torch.Generator().manual_seed(0))
    clusters = model._cluster_of_latent(z)
    shares = torch.bincount(clusters, minlength=3).double() / len(z)
    torch.testing.assert_close(shares, torch.tensor([0.1, 0.3, 0.6], dtype=torch.double), atol=0.01, rtol=0)
    assert torch.equal(model.generate(z[:5]), model.generate(z[:5]))  # deterministic in z
    assert not model.is_conditional
    with pytest.raises(ValueError, match="unconditional; it takes no labels"):
        model.sample(2, labels=torch.tensor([0, 1]))


def test_self_conditioning_settings_are_checked():
    with pytest.raises(ConfigError, match="labels or clusters, not both"):
        build_model(
            "gan", {"conditional": True, "pseudo_classes": 4, "num_classes": 10, "image_shape": SHAPE}
        )
    with pytest.raises(ValueError, match="pseudo_classes cannot train with differential privacy"):
        model_with(2).private_parts()
