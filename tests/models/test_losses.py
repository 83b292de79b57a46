"""Every loss against values computed by hand on fixed tensors."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.models.ae import reconstruction_loss
from genlab.models.gan import discriminator_loss, generator_loss
from genlab.models.vae import bernoulli_nll, gaussian_kl, gaussian_nll


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_discriminator_loss_is_the_spec_formula():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    # L_D = mean over the batch of -log D(x) - log(1 - D(G(z)))
    expected = (
        sum(-math.log(sigmoid(r)) - math.log(1 - sigmoid(f)) for r, f in [(2.0, 0.5), (-1.0, -3.0)]) / 2
    )
    assert discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)


def test_discriminator_loss_with_one_sided_label_smoothing():
    real, fake = torch.tensor([1.5]), torch.tensor([0.2])
    t = 0.9
    expected = -t * math.log(sigmoid(1.5)) - (1 - t) * math.log(1 - sigmoid(1.5)) - math.log(1 - sigmoid(0.2))
    assert discriminator_loss(real, fake, real_label=t).item() == pytest.approx(expected, rel=1e-6)


def test_generator_loss_is_non_saturating():
    fake = torch.tensor([0.0, 1.0, -2.0])
    expected = sum(-math.log(sigmoid(v)) for v in (0.0, 1.0, -2.0)) / 3
    assert generator_loss(fake).item() == pytest.approx(expected, rel=1e-6)


def test_gan_losses_stay_finite_for_extreme_logits():
    # A naive log(sigmoid(x)) gives -inf here; the softplus form gives the exact value.
    huge = torch.tensor([200.0])
    assert discriminator_loss(-huge, huge).item() == pytest.approx(400.0)
    assert generator_loss(-huge).item() == pytest.approx(200.0)


def test_gaussian_kl_closed_form():
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
    # per dim: 0.5 * (sigma^2 + mu^2 - 1 - log sigma^2)
    expected = 0.5 * (1 + 1 - 1 - 0) + 0.5 * (4 + 0 - 1 - math.log(4.0))
    assert gaussian_kl(mu, logvar).item() == pytest.approx(expected, rel=1e-6)
    assert gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max().item() == 0.0


def test_bernoulli_nll_by_hand():
    logits = torch.tensor([[[[0.0, 2.0]]]])  # (1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]]])
    expected = -math.log(0.5) - math.log(1 - sigmoid(2.0))
    assert bernoulli_nll(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_gaussian_nll_by_hand():
    mean, target, s = torch.tensor([[0.2, 0.5]]), torch.tensor([[0.0, 0.5]]), 0.1
    expected = 0.5 * 0.04 / s**2 + 2 * math.log(s * math.sqrt(2 * math.pi))
    assert gaussian_nll(mean, target, s).item() == pytest.approx(expected, rel=1e-6)


def test_autoencoder_reconstruction_losses_by_hand():
    logits = torch.tensor([[0.0, 1.0], [-1.0, 3.0]])
    target = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    bce = [-math.log(0.5) - math.log(sigmoid(1.0)), -math.log(sigmoid(-1.0)) - math.log(sigmoid(3.0))]
    assert reconstruction_loss(logits, target, "bce").item() == pytest.approx(sum(bce) / 2, rel=1e-6)
    mse = [(0.5 - 0) ** 2 + (sigmoid(1.0) - 1) ** 2, (sigmoid(-1.0) - 1) ** 2 + (sigmoid(3.0) - 1) ** 2]
    assert reconstruction_loss(logits, target, "mse").item() == pytest.approx(sum(mse) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        reconstruction_loss(logits, target, "l1")


def test_vae_loss_is_reconstruction_plus_beta_kl():
    from genlab.models.base import Batch
    from genlab.models.vae import VAE

    torch.manual_seed(0)
    model = VAE(VAE.make_config({"latent_dim": 3, "hidden": (8,), "beta": 2.5, "image_shape": (1, 2, 2)}))
    x = torch.rand(4, 1, 2, 2)
    torch.manual_seed(1)
    output = model.training_step(Batch(x), "main")
    torch.manual_seed(1)
    reconstruction, kl = model.loss_terms(x)
    assert output.loss.item() == pytest.approx((reconstruction + 2.5 * kl).mean().item(), rel=1e-6)
    assert output.logs["kl"].item() == pytest.approx(kl.mean().item(), rel=1e-6)


def test_free_bits_floors_each_dims_batch_mean_kl():
    from genlab.models.vae import free_bits_kl

    kl = torch.tensor([[0.05, 1.0], [0.15, 3.0]])  # batch means per dim: [0.1, 2.0]
    assert free_bits_kl(kl, 0.5).item() == pytest.approx(0.5 + 2.0)
    assert free_bits_kl(kl, 0.0).item() == pytest.approx(2.1)  # off: the batch mean of the summed KL


def test_kl_warmup_schedule_ramps_linearly_to_beta():
    from genlab.models.vae import kl_weight

    assert [kl_weight(step, 4, 2.0) for step in (0, 1, 2, 4, 10)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert kl_weight(0, 0, 2.0) == 2.0  # no warm-up
    assert kl_weight(torch.tensor(3.0), 4, 2.0).item() == pytest.approx(1.5)


def test_vae_warmup_step_lives_in_a_buffer_and_scales_the_kl():
    from genlab.models.base import Batch
    from genlab.models.vae import VAE

    settings = {
        "latent_dim": 3,
        "hidden": (8,),
        "image_shape": (1, 2, 2),
        "kl_warmup_steps": 2,
        "free_bits": 0.2,
    }
    model = VAE(VAE.make_config(settings))
    x = torch.rand(4, 1, 2, 2)
    for step, weight in enumerate([0.0, 0.5, 1.0]):
        torch.manual_seed(step)
        output = model.training_step(Batch(x), "main")
        torch.manual_seed(step)
        reconstruction, kl = model.loss_terms_per_dim(x)
        expected = reconstruction.mean() + weight * kl.mean(dim=0).clamp(min=0.2).sum()
        assert output.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert model.state_dict()["kl_step"].item() == 3
