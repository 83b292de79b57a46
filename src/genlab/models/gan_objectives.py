"""GAN objectives and regularizers as small functions of discriminator outputs (logits / critic values).

Each family of losses is a (discriminator, generator) pair chosen by the GAN's `loss` setting:
- ns (Goodfellow et al. 2014, the article's): L_D = softplus(-d(x)) + softplus(d(G(z))), L_G = softplus(-d(G(z)))
- hinge (Lim & Ye 2017; Miyato et al. 2018): L_D = relu(1 - d(x)) + relu(1 + d(G(z))), L_G = -d(G(z))
- wgan-gp (Gulrajani et al. 2017): L_D = d(G(z)) - d(x) + lambda * GP, L_G = -d(G(z))
Penalties: gradient penalty on interpolates, R1 on real data (Mescheder et al. 2018), feature matching
and historical averaging (Salimans et al. 2016).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("ns", "hinge", "wgan-gp")


def ns_discriminator_loss(real_logits: Tensor, fake_logits: Tensor, real_label: float = 1.0) -> Tensor:
    """Mean over the batch of -t log D(x) - (1 - t) log(1 - D(x)) - log(1 - D(G(z))), t = real_label.

    real_label < 1 is one-sided label smoothing (Salimans et al. 2016); 1.0 is the spec's exact L_D.
    """
    real_term = real_label * F.softplus(-real_logits) + (1.0 - real_label) * F.softplus(real_logits)
    return real_term.mean() + F.softplus(fake_logits).mean()


def ns_generator_loss(fake_logits: Tensor) -> Tensor:
    """L_G = -log D(G(z)), averaged over the batch."""
    return F.softplus(-fake_logits).mean()


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E[max(0, 1 - d(x))] + E[max(0, 1 + d(G(z)))]: D stops pushing once a sample is beyond the margin."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def wasserstein_discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """E[d(G(z))] - E[d(x)]: minus the critic's estimate of the Wasserstein-1 distance."""
    return fake_scores.mean() - real_scores.mean()


def critic_generator_loss(fake_scores: Tensor) -> Tensor:
    """-E[d(G(z))], the generator loss of both hinge and WGAN: raise the critic's score of fakes."""
    return -fake_scores.mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, mix: Tensor) -> Tensor:
    """E[(||grad_x d(x_hat)||_2 - 1)^2] at x_hat = mix * real + (1 - mix) * fake, mix (B,) in [0, 1].

    Differentiable (create_graph) so the penalty trains the critic's weights."""
    weights = mix.view(-1, *([1] * (real.dim() - 1)))  # (B, 1, 1, 1)
    interpolates = (weights * real.detach() + (1.0 - weights) * fake.detach()).requires_grad_(True)
    scores = critic(interpolates)  # (B,)
    (grad,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
    norms = grad.flatten(1).norm(dim=1)  # (B,)
    return (norms - 1.0).pow(2).mean()


def r1_penalty(real_scores: Tensor, real_images: Tensor) -> Tensor:
    """E||grad_x d(x)||^2 on real data (the caller scales it by gamma / 2). `real_images` must have
    requires_grad set before `real_scores` was computed from them."""
    (grad,) = torch.autograd.grad(real_scores.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(dim=1).mean()


def feature_matching_loss(real_features: Tensor, fake_features: Tensor) -> Tensor:
    """|| mean_b f(x) - mean_b f(G(z)) ||^2 over D's last hidden features (B, F): the generator matches
    the statistics of real data instead of fooling D's current output."""
    return (real_features.detach().mean(dim=0) - fake_features.mean(dim=0)).pow(2).sum()


def historical_average_penalty(parameters: Sequence[Tensor], averages: Sequence[Tensor]) -> Tensor:
    """sum_i ||theta_i - mean of past theta_i||^2 (the averages are constants)."""
    return sum((p - a.detach()).pow(2).sum() for p, a in zip(parameters, averages))


class HistoricalAverage(nn.Module):
    """The running mean of a network's past parameters, in buffers, so checkpoints carry it and resume
    is exact. `penalty(net)` first folds the current parameters into the mean, then returns the
    historical-averaging penalty ||theta - mean||^2 (Salimans et al. 2016, sec. 3.3)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        for index, parameter in enumerate(net.parameters()):
            self.register_buffer(f"mean_{index}", parameter.detach().clone())

    def means(self) -> list[Tensor]:
        return [buffer for name, buffer in self.named_buffers() if name.startswith("mean_")]

    def penalty(self, net: nn.Module) -> Tensor:
        parameters = list(net.parameters())
        means = self.means()
        with torch.no_grad():  # mean_t = mean_{t-1} + (theta - mean_{t-1}) / t, on the device (no sync)
            self.count += 1
            steps = torch._foreach_sub([p.detach() for p in parameters], means)
            torch._foreach_div_(steps, self.count.to(means[0].dtype))
            torch._foreach_add_(means, steps)
        return historical_average_penalty(parameters, means)
