"""A Gaussian mixture fitted by EM, kept in buffers so it is saved with the weights and sampled seeded.

The autoencoder has no prior of its own; fitting a mixture to its training codes lets it generate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GaussianMixture(nn.Module):
    def __init__(self, components: int, dim: int):
        super().__init__()
        self.register_buffer(
            "log_weights", torch.full((components,), -torch.log(torch.tensor(float(components))))
        )
        self.register_buffer("means", torch.zeros(components, dim))
        self.register_buffer("scale_tril", torch.eye(dim).repeat(components, 1, 1))  # (K, d, d) Cholesky

    @torch.no_grad()
    def fit(self, codes: Tensor, iterations: int = 100, reg: float = 1e-4, seed: int = 0) -> None:
        """EM with full covariances, in float64; initialised from k-means++-style seeded picks."""
        x = codes.detach().double()  # (N, d)
        n, d = x.shape
        k = self.means.shape[0]
        generator = torch.Generator().manual_seed(seed)
        means = self._init_means(x, k, generator)
        covariances = torch.cov(x.T).expand(k, d, d).clone() + reg * torch.eye(
            d, dtype=x.dtype, device=x.device
        )
        log_weights = torch.full((k,), -torch.log(torch.tensor(float(k))), dtype=x.dtype, device=x.device)
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        for _ in range(iterations):
            scale_tril = torch.linalg.cholesky(covariances)
            log_prob = torch.distributions.MultivariateNormal(means, scale_tril=scale_tril).log_prob(
                x[:, None, :]
            )
            responsibilities = torch.softmax(log_prob + log_weights, dim=1)  # (N, K)
            counts = responsibilities.sum(dim=0) + 1e-10  # (K,)
            log_weights = torch.log(counts / n)
            means = responsibilities.T @ x / counts[:, None]
            centered = x[None, :, :] - means[:, None, :]  # (K, N, d)
            covariances = (
                torch.einsum("nk,kni,knj->kij", responsibilities, centered, centered) / counts[:, None, None]
            )
            covariances = covariances + reg * eye
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

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, d) codes; the randomness comes from `generator` on CPU so the same seed gives the same codes."""
        weights = self.log_weights.exp().cpu()
        component = torch.multinomial(weights, n, replacement=True, generator=generator)  # (n,)
        noise = torch.randn(n, self.means.shape[1], generator=generator).to(self.means)
        component = component.to(self.means.device)
        return self.means[component] + torch.einsum("nij,nj->ni", self.scale_tril[component], noise)
