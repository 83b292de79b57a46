"""The VAE's ELBO and importance-sampled NLL against torch.distributions and the bound between them."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal

from genlab.models.vae import VAE, VAEConfig


@pytest.fixture(scope="module")
def vae_and_data() -> tuple[VAE, torch.Tensor]:
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=3, hidden=(16,))).eval()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # continuous intensities
    return model, x


def log_weight_by_hand(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) for one z per image, from torch.distributions: (B,)."""
    mu, logvar = model.encode(x)
    posterior = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    z = mu + torch.exp(0.5 * logvar) * eps
    prior = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    decoder = Independent(
        Bernoulli(logits=model.decode_logits(z), validate_args=False), 3
    )  # log_prob accepts x in [0, 1]
    return decoder.log_prob(x) + prior.log_prob(z) - posterior.log_prob(z)


@torch.no_grad()
def test_k1_is_the_one_sample_elbo_with_the_same_noise(vae_and_data):
    model, x = vae_and_data
    nll = model.importance_sampled_nll(x, k=1, generator=torch.Generator().manual_seed(7))
    eps = torch.randn((1, *x.shape[:1], 3), generator=torch.Generator().manual_seed(7))[0]
    assert torch.allclose(-nll, log_weight_by_hand(model, x, eps), rtol=1e-5, atol=1e-3)


@torch.no_grad()
def test_k_samples_are_the_log_mean_exp_of_the_weights(vae_and_data):
    model, x = vae_and_data
    k = 5
    nll = model.importance_sampled_nll(x, k=k, chunk=k, generator=torch.Generator().manual_seed(3))
    eps = torch.randn((k, x.shape[0], 3), generator=torch.Generator().manual_seed(3))
    weights = torch.stack([log_weight_by_hand(model, x, e) for e in eps]).double()  # (K, B)
    shift = weights.max(dim=0).values  # -log mean exp(w), shifted so exp neither under- nor overflows
    expected = -(shift + (weights - shift).exp().mean(dim=0).log())
    assert torch.allclose(nll.double(), expected, rtol=1e-5, atol=1e-3)


@torch.no_grad()
def test_elbo_is_minus_the_vae_loss_and_bounds_the_nll(vae_and_data):
    model, x = vae_and_data
    elbo = model.elbo(x, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    reconstruction, kl = model.loss_terms(x)  # the training loss terms with beta = 1, same noise
    assert torch.allclose(elbo, -(reconstruction + kl), rtol=1e-5)
    # in expectation: the K=1 estimator averages to the ELBO, and K=64 is tighter (NLL <= -ELBO)
    generator = torch.Generator().manual_seed(1)
    elbo_mean = torch.stack([model.elbo(x, generator=generator) for _ in range(200)]).mean(dim=0)
    k1_mean = torch.stack(
        [model.importance_sampled_nll(x, k=1, generator=generator) for _ in range(200)]
    ).mean(0)
    assert torch.allclose(-k1_mean, elbo_mean, rtol=2e-3)
    nll_64 = model.importance_sampled_nll(x, k=64, chunk=16, generator=generator)
    assert (nll_64 <= -elbo_mean).all()


def test_bad_k_is_refused(vae_and_data):
    model, x = vae_and_data
    with pytest.raises(ValueError, match="k must be"):
        model.importance_sampled_nll(x, k=0)
