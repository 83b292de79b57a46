"""A Gaussian mixture fitted by EM, kept in buffers so it is saved with the weights and sampled seeded.

The autoencoder has no prior of its own; fitting a mixture to its training codes lets it generate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

SAMPLER_FIT_IMAGES = 10_000  # plenty for a 10-component mixture, and it keeps the per-epoch cost flat


class GaussianMixture(nn.Module):
    def __init__(self, components: int, dim: int):
        super().__init__()
        # A Python float fill, not a tensor: the model can then be built on the meta device (size checks).
        self.register_buffer("log_weights", torch.full((components,), -math.log(components)))
        self.register_buffer("means", torch.zeros(components, dim))
        self.register_buffer("scale_tril", torch.eye(dim).repeat(components, 1, 1))  # (K, d, d) Cholesky

    @torch.no_grad()
    def fit(
        self, codes: Tensor, iterations: int = 100, tol: float = 1e-3, reg: float = 1e-4, seed: int = 0
    ) -> None:
        """EM with full covariances, in float64, from k-means++-style seeded picks; stops when the mean
        log-likelihood gains less than `tol` nats per point. (Warm-starting from the previous epoch's
        mixture was measured: it gets stuck, and the judge recognized 42% of samples instead of 68%.)"""
        x = codes.detach().double()  # (N, d)
        n, d = x.shape
        k = self.means.shape[0]
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        means = self._init_means(x, k, torch.Generator().manual_seed(seed))
        spread = torch.cov(x.T) if n > 1 else x.new_zeros(d, d)  # one code (a rare class): no spread
        covariances = spread.expand(k, d, d).clone() + reg * eye
        log_weights = torch.full((k,), -math.log(k), dtype=x.dtype, device=x.device)
        previous = -float("inf")
        for _ in range(iterations):
            joint = _log_gaussian(x, means, torch.linalg.cholesky(covariances)) + log_weights  # (N, K)
            log_likelihood = float(torch.logsumexp(joint, dim=1).mean())
            responsibilities = torch.softmax(joint, dim=1)  # (N, K)
            counts = responsibilities.sum(dim=0) + 1e-10  # (K,)
            log_weights = torch.log(counts / n)
            means = responsibilities.T @ x / counts[:, None]
            centered = x[None, :, :] - means[:, None, :]  # (K, N, d)
            weighted = centered * responsibilities.T[:, :, None]
            covariances = weighted.transpose(1, 2) @ centered / counts[:, None, None] + reg * eye  # (K, d, d)
            if log_likelihood - previous < tol:
                break
            previous = log_likelihood
        self.log_weights.copy_(log_weights.to(self.log_weights))
        self.means.copy_(means.to(self.means))
        self.scale_tril.copy_(torch.linalg.cholesky(covariances).to(self.scale_tril))

    @staticmethod
    def _init_means(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
        if x.shape[0] <= k:  # too few codes to spread the components out: reuse them cyclically
            return x[torch.arange(k) % x.shape[0]].clone()
        picks = [int(torch.randint(x.shape[0], (1,), generator=generator))]
        for _ in range(1, k):
            distances = torch.cdist(x, x[picks]).min(dim=1).values.pow(2).cpu()
            picks.append(int(torch.multinomial(distances / distances.sum(), 1, generator=generator)))
        return x[picks].clone()

    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """(n, d) codes; the randomness comes from `generator` on CPU so the same seed gives the same codes.
        `temperature` scales each component's spread (its standard deviations) around its mean."""
        weights = self.log_weights.exp().cpu()
        component = torch.multinomial(weights, n, replacement=True, generator=generator)  # (n,)
        noise = temperature * torch.randn(n, self.means.shape[1], generator=generator).to(self.means)
        component = component.to(self.means.device)
        return self.means[component] + torch.einsum("nij,nj->ni", self.scale_tril[component], noise)


@torch.no_grad()
def codes_of(
    model: nn.Module,
    encode: Callable[[Tensor, Tensor | None], Tensor],
    images: Tensor,
    labels: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """encode(images, labels) of at most SAMPLER_FIT_IMAGES evenly spaced training images, with `model` in
    eval mode meanwhile (no dropout, running BatchNorm statistics): codes (N, d) and their labels (N,)."""
    was_training = model.training
    model.eval()
    if len(images) > SAMPLER_FIT_IMAGES:
        pick = torch.linspace(0, len(images) - 1, SAMPLER_FIT_IMAGES).long().to(images.device)
        images, labels = images[pick], None if labels is None else labels[pick]
    starts = range(0, len(images), 1024)
    codes = torch.cat(
        [encode(images[i : i + 1024], None if labels is None else labels[i : i + 1024]) for i in starts]
    )
    model.train(was_training)
    return codes, labels


def _log_gaussian(x: Tensor, means: Tensor, scale_tril: Tensor) -> Tensor:
    """log N(x_n; mean_k, L_k L_k^T) for every point and component: (N, d), (K, d), (K, d, d) -> (N, K)."""
    centered = (x[None, :, :] - means[:, None, :]).transpose(1, 2)  # (K, d, N)
    solved = torch.linalg.solve_triangular(scale_tril, centered, upper=False)  # (K, d, N)
    mahalanobis = solved.pow(2).sum(dim=1)  # (K, N)
    log_det = 2.0 * torch.log(torch.diagonal(scale_tril, dim1=1, dim2=2)).sum(dim=1)  # (K,)
    d = x.shape[1]
    return (-0.5 * (mahalanobis + log_det[:, None] + d * math.log(2.0 * math.pi))).T
