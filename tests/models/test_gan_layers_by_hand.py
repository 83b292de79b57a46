"""D's batch layers, the projection score and how each penalty enters D's loss, against values worked out
by hand (the objectives themselves are in test_gan_objectives.py)."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.models.base import Batch
from genlab.models.gan import MinibatchDiscrimination, MinibatchStdDev
from genlab.registry import get_model_class
from genlab.runs import build_model

MLP_GAN = {"latent_dim": 4, "g_hidden": (8,), "d_hidden": (3,), "image_shape": (1, 4, 4), "num_classes": 3}


def test_minibatch_discrimination_appends_each_samples_closeness_to_the_others():
    layer = MinibatchDiscrimination(in_features=2, kernels=1, kernel_dim=2)
    with torch.no_grad():
        layer.projection.copy_(torch.eye(2))  # M_i = x_i
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # L1 distances: |x0 - x1| = 1, |x0 - x2| = 2, |x1 - x2| = 1 + 2 = 3; o_i sums exp(-d) over j != i
    expected = [math.exp(-1) + math.exp(-2), math.exp(-1) + math.exp(-3), math.exp(-2) + math.exp(-3)]
    out = layer(x)
    assert torch.equal(out[:, :2], x)
    assert out[:, 2].tolist() == pytest.approx(expected)


def test_minibatch_stddev_appends_the_mean_feature_spread():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    # per-feature population std: |1 - 3| / 2 = 1 and |2 - 6| / 2 = 2; their mean 1.5, the same for each row
    assert MinibatchStdDev()(x).tolist() == [[1.0, 2.0, 1.5], [3.0, 6.0, 1.5]]
    assert MinibatchStdDev()(x[:1]).tolist() == [[1.0, 2.0, 0.0]]  # one sample has no spread


def test_projection_score_adds_the_labels_embedding_dot_the_features():
    model = build_model("gan", {**MLP_GAN, "conditional": True})
    d = model.discriminator
    with torch.no_grad():
        d.head.weight.copy_(torch.tensor([[1.0, -1.0, 2.0]]))
        d.head.bias.fill_(0.5)
        d.projection.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 0.0, -1.0]]))
    features = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    # head: 1 - 2 + 6 + 0.5 = 5.5; label 1 adds 1 + 2 + 3 = 6, label 2 adds 2 - 3 = -1
    assert d.score(features, torch.tensor([1, 2])).tolist() == pytest.approx([11.5, 4.5])
    unconditional = build_model("gan", MLP_GAN).discriminator
    assert unconditional.projection is None


def _d_loss(settings: dict) -> tuple[float, dict]:
    torch.manual_seed(0)  # the same weights for every setting: the penalties add no parameters
    model = build_model("gan", {**MLP_GAN, **settings})
    torch.manual_seed(1)  # the same fake batch and interpolation weights
    real = torch.rand(6, 1, 4, 4) * 2 - 1
    output = model.training_step(Batch(real, torch.arange(6) % 3), "d")
    return output.loss.item(), {k: float(v) for k, v in output.logs.items()}


def test_r1_enters_d_loss_as_gamma_over_two_times_the_penalty():
    plain, _ = _d_loss({})
    penalized, logs = _d_loss({"r1_gamma": 4.0})
    assert logs["r1"] > 0
    assert penalized - plain == pytest.approx(0.5 * 4.0 * logs["r1"], rel=1e-5)


def test_gradient_penalty_enters_the_critics_loss_weighted_by_gp_weight():
    settings = {"loss": "wgan-gp", "g_batch_norm": False}
    unweighted, logs_1 = _d_loss({**settings, "gp_weight": 1.0})
    weighted, logs_10 = _d_loss({**settings, "gp_weight": 10.0})
    assert logs_1["gradient_penalty"] == pytest.approx(logs_10["gradient_penalty"])
    assert weighted - unweighted == pytest.approx(9.0 * logs_1["gradient_penalty"], rel=1e-5)


def test_two_time_scales_give_each_net_its_own_learning_rate():
    model = build_model("gan", {**MLP_GAN, "lr_d": 4e-4, "lr_g": 1e-4})
    optimizers = model.optimizers()
    assert optimizers["d"].param_groups[0]["lr"] == 4e-4
    assert optimizers["g"].param_groups[0]["lr"] == 1e-4
    ttur = get_model_class("gan").presets["ttur"].model
    assert ttur["lr_d"] > ttur["lr_g"]
