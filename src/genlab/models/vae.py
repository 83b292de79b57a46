"""VAE: encoder -> (mu, log sigma^2), z = mu + sigma * eps, decoder; loss = reconstruction + beta * KL.

Settings: MLP or conv nets (`arch`); a conditional VAE (CVAE, Sohn et al. 2015) whose encoder and
decoder both see the class as a one-hot; KL warm-up (beta ramps from 0 over `kl_warmup_steps`, the step
count in a buffer so resume is exact) and free bits (Kingma et al. 2016: each latent dim's batch-mean KL
counts as at least `free_bits` nats, so the optimizer gains nothing by collapsing it further).

KL(q(z|x) || N(0, I)) in closed form: -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2). Reconstruction is a
proper negative log-likelihood in nats, so the loss is the negative ELBO (beta = 1):
- bernoulli: sum of binary cross-entropies computed from logits;
- gaussian: 1/2 sum((x - x_hat)^2) / s^2 + D log(s sqrt(2 pi)) with a fixed decoder scale s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..constraints import FLAG, MAX_CHANNELS, Check, OneOf, Sizes, at_least, positive
from ..nn import ConvUpsampler, conv_encoder, mlp
from ..registry import register_model
from .base import ARCHS, Batch, GenerativeModel, ModelConfig, Preset, StepOutput
from .gmm import GaussianMixture, codes_of


def gaussian_kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per sample and latent dim: (B, d) -> (B, d)."""
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent dims: (B, d) -> (B,)."""
    return gaussian_kl_per_dim(mu, logvar).sum(dim=1)


def free_bits_kl(kl_per_dim: Tensor, free_bits: float) -> Tensor:
    """sum_j max(free_bits, mean_b KL_bj): (B, d) -> scalar. With free_bits = 0 this is the batch mean of
    the summed KL (each KL_j >= 0)."""
    return kl_per_dim.mean(dim=0).clamp(min=free_bits).sum()


def kl_weight(step: int | Tensor, warmup_steps: int, beta: float) -> float | Tensor:
    """beta * min(1, step / warmup_steps): 0 at the first step, beta from step warmup_steps on."""
    if warmup_steps <= 0:
        return beta
    ramp = step / warmup_steps
    return beta * (ramp.clamp(max=1.0) if isinstance(ramp, Tensor) else min(1.0, ramp))


def bernoulli_nll(logits: Tensor, target: Tensor) -> Tensor:
    """-log p(x | logits) per sample, summed over pixels: (B, ...) -> (B,)."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(dim=1)


def gaussian_nll(mean: Tensor, target: Tensor, scale: float) -> Tensor:
    """-log N(x; mean, scale^2 I) per sample, summed over pixels: (B, ...) -> (B,)."""
    squared = (target - mean).pow(2).flatten(1).sum(dim=1)
    pixels = target[0].numel()
    return 0.5 * squared / scale**2 + pixels * math.log(scale * math.sqrt(2.0 * math.pi))


@dataclass
class VAEConfig(ModelConfig):
    latent_dim: int = 16
    arch: str = "mlp"  # or "conv"
    conditional: bool = False
    hidden: tuple[int, ...] = (512, 256)
    conv_width: int = 32  # conv: channels of the encoder's first stage / the decoder's last
    likelihood: str = "bernoulli"  # or "gaussian"
    gaussian_scale: float = 0.1  # decoder std for the gaussian likelihood, in [0, 1] pixel units
    beta: float = 1.0
    kl_warmup_steps: int = 0
    free_bits: float = 0.0
    # Where samples' codes come from: the prior N(0, I), or a Gaussian mixture fitted during training (on the
    # trainer's refit schedule) to the posterior means of the training images (ex-post density estimation,
    # Ghosh et al. 2020; the second stage of Dai & Wipf 2019). The prior leaves "holes" the decoder never
    # saw; the mixture does not.
    # Likelihoods (ELBO, NLL) stay those of the model with its N(0, I) prior.
    sampler: str = "prior"
    gmm_components: int = 10
    # Sampling temperature: the codes' spread around the prior's (or each mixture component's) centre is
    # scaled by this; < 1 trades variety for typical, cleaner images (as truncation does for GANs).
    temperature: float = 1.0
    lr: float = 1e-3
    constraints: ClassVar[dict[str, Check]] = {
        **ModelConfig.constraints,
        "arch": OneOf(ARCHS),
        "conditional": FLAG,
        "hidden": Sizes(),
        "conv_width": at_least(1, MAX_CHANNELS),
        "likelihood": OneOf(("bernoulli", "gaussian")),
        "gaussian_scale": positive(),
        "beta": at_least(0),
        "kl_warmup_steps": at_least(0),
        "free_bits": at_least(0),
        "sampler": OneOf(("prior", "gmm")),
        "gmm_components": at_least(1, 1000),
        "temperature": positive(),
        "lr": positive(),
    }


_CONV = Preset(
    "conv VAE: 2 strided-conv stages (width 32) to 32 latent dims and back, Bernoulli decoder, samples' codes "
    "from a 30-component mixture fitted to the training codes, 60 epochs",
    model={"arch": "conv", "latent_dim": 32, "sampler": "gmm", "gmm_components": 30},
    train={"epochs": 60},
)


@register_model("vae")
class VAE(GenerativeModel):
    Config = VAEConfig
    sampling_settings: ClassVar[tuple[str, ...]] = ("temperature",)
    input_range = "unit"
    presets: ClassVar[dict[str, Preset]] = {
        # Measured on mnist-5k (judge of benchmarks/sample_quality.py): a conv VAE with 32 latent dims
        # reconstructs test digits at SSIM 0.90, but its prior samples fall in the prior's "holes" (30%
        # recognized); sampling its codes from a 30-component mixture fitted to the training codes gives 77%,
        # digits in 9-11% shares. The MLP VAE of before (8 dims, prior): 50%, SSIM 0.78; kept as `mlp`.
        "default": _CONV,
        "conv": _CONV,
        "mlp": Preset(
            "MLP VAE 784-512-256-8, Bernoulli decoder, beta 1, Adam 1e-3, 100 epochs, samples from the prior",
            model={"latent_dim": 8},
            train={"epochs": 100},
        ),
        "beta4": Preset(
            "beta-VAE with beta = 4: smoother latent space, blurrier images", model={"beta": 4.0}
        ),
        # Measured: 100 epochs, prior sampling: the worst class (8) judged as asked 77%; with each class's
        # codes drawn from its own 3-component mixture, 85-94% over two sets of seeds; at temperature 0.6,
        # 96-98.5% (recognized 97-98%). 32 latent dims did worse (61%): more of the class leaks into codes.
        "conditional": Preset(
            "conditional VAE (CVAE): the class as a one-hot into the conv encoder and decoder, 8 latent dims, "
            "codes from a 3-component mixture per class sampled at temperature 0.6, 100 epochs",
            model={
                "arch": "conv",
                "latent_dim": 8,
                "conditional": True,
                "sampler": "gmm",
                "gmm_components": 3,
                "temperature": 0.6,
            },
            train={"epochs": 100},
        ),
        "warmup": Preset(
            "KL warm-up over 2000 steps and 0.1 free nats per latent dim, 16 latent dims",
            model={"latent_dim": 16, "kl_warmup_steps": 2000, "free_bits": 0.1},
            train={"epochs": 100},
        ),
    }
    setting_help: ClassVar[dict[str, str]] = {
        "image_shape": "(C, H, W) of the data; set from the dataset",
        "num_classes": "classes of the data; set from the dataset (used when conditional)",
        "latent_dim": "size of z: fewer dims leave fewer holes in the prior, more give sharper reconstructions",
        "arch": "mlp or conv (strided conv encoder/decoder: sharper images, fewer weights)",
        "conditional": "CVAE: encoder and decoder see the class, so you can sample a requested digit",
        "hidden": "MLP layer widths (the decoder mirrors them)",
        "conv_width": "conv channels of the first encoder stage (doubled per stage)",
        "likelihood": "bernoulli (BCE, for near-binary images) or gaussian (squared error / gaussian_scale^2)",
        "gaussian_scale": "decoder std of the gaussian likelihood: smaller weighs reconstruction more",
        "beta": "weight of the KL term: >1 smoother latents (beta-VAE), <1 sharper reconstructions",
        "kl_warmup_steps": "ramp beta from 0 over this many steps so the decoder learns to use z first",
        "free_bits": "nats per latent dim below which KL is not penalized: fights posterior collapse",
        "sampler": "prior (N(0, I)) or gmm (a mixture fitted to the training codes: no holes, sharper samples)",
        "gmm_components": "components of the sampler=gmm mixture",
        "temperature": "scale of the sampled codes' spread: < 1 gives cleaner, more typical, less varied samples",
        "lr": "Adam learning rate",
    }

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        if config.conditional and config.num_classes < 2:
            raise ValueError(
                f"a conditional VAE needs labelled data with >= 2 classes, got {config.num_classes}"
            )
        self.encoder, self.decoder = coder_networks(config, 2 * config.latent_dim, "relu")
        if config.sampler == "gmm":
            self.code_mixture = GaussianMixture(config.gmm_components, config.latent_dim)
            if config.conditional:  # and one per class: a CVAE's codes still differ by class (see sample)
                self.class_mixtures = nn.ModuleList(
                    GaussianMixture(config.gmm_components, config.latent_dim)
                    for _ in range(config.num_classes)
                )
        if config.kl_warmup_steps:  # steps taken, saved with the weights so a resumed ramp goes on exactly
            self.register_buffer("kl_step", torch.zeros((), dtype=torch.int64))

    @property
    def is_conditional(self) -> bool:
        return self.config.conditional

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def private_parts(self) -> dict[str, torch.nn.Module]:
        return {"main": self}  # one optimizer over every weight, all of them fitted to the data

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        if self.config.sampler == "gmm":
            return self.code_mixture.sample(n, generator, self.config.temperature)
        return self.config.temperature * super().sample_latent(n, generator)

    def interpolate_latents(self, a: Tensor, b: Tensor, t: Tensor) -> Tensor:
        if self.config.sampler == "gmm":  # the mixture's mass is not on a Gaussian shell
            return torch.lerp(a, b, t[:, None])
        return super().interpolate_latents(a, b, t)

    def fits_sampler_to_data(self) -> bool:
        return self.config.sampler == "gmm"

    def fit_sampler(self, images: Tensor, labels: Tensor | None = None) -> None:
        """sampler=gmm: fit the mixture to the posterior means of (at most 10,000) training images; a CVAE
        also fits each class's mixture to the codes of that class's images (a class without images keeps
        N(0, I))."""
        if self.config.sampler != "gmm":
            return
        labels = labels if self.is_conditional else None
        codes, labels = codes_of(self, lambda x, y: self.encode(x, y)[0], images, labels)
        self.code_mixture.fit(codes)
        if self.is_conditional:
            for k, mixture in enumerate(self.class_mixtures):
                if bool((labels == k).any()):
                    mixture.fit(codes[labels == k])

    @torch.no_grad()
    def sample(
        self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """As every model samples, except a CVAE with sampler=gmm: its codes come from the mixture of the
        class asked for. The decoder sees the class, yet the codes still carry some of it (the encoder sees
        the image), so a code typical of one class decoded as another blends the two. Measured on a CVAE
        with 8 latent dims: the worst class's samples judged as asked went from 77% (prior) to 93.5%."""
        if not (self.is_conditional and self.config.sampler == "gmm"):
            return super().sample(n, labels=labels, generator=generator)
        if labels is None:
            labels = torch.randint(self.config.num_classes, (n,), generator=generator)
        labels = self.validate_labels(labels, n)
        was_training = self.training
        self.eval()
        try:
            z = torch.empty(n, self.config.latent_dim, device=self.device)
            for k in labels.unique().tolist():  # ascending: the same generator gives the same codes
                rows = labels == k
                z[rows] = self.class_mixtures[k].sample(int(rows.sum()), generator, self.config.temperature)
            return self.generate(z, labels)
        finally:
            self.train(was_training)

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) in [0, 1] [+ labels (B,) for a CVAE] -> mu, logvar, each (B, latent_dim)."""
        labels = self.validate_labels(labels, x.shape[0])
        mu, logvar = self.encoder(encoder_input(x, labels, self.config)).chunk(2, dim=1)
        return mu, logvar

    def decode_logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.decoder(decoder_input(z, labels, self.config)).view(z.shape[0], *self.config.image_shape)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The decoder's mean image in [0, 1]."""
        labels = self.validate_labels(labels, z.shape[0])
        return torch.sigmoid(self.decode_logits(z, labels))

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.decode(z, labels)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        labels = self.validate_labels(labels, x.shape[0])
        return self.decode(self.encode(x, labels)[0], labels)

    def embed(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.encode(x, labels)[0]

    def reconstruction_nll(self, decoded_logits: Tensor, x: Tensor) -> Tensor:
        if self.config.likelihood == "bernoulli":
            return bernoulli_nll(decoded_logits, x)
        return gaussian_nll(torch.sigmoid(decoded_logits), x, self.config.gaussian_scale)

    def loss_terms(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-sample reconstruction NLL and KL, each (B,), with one reparameterized z per image."""
        reconstruction, kl_per_dim = self.loss_terms_per_dim(x, labels)
        return reconstruction, kl_per_dim.sum(dim=1)

    def loss_terms_per_dim(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-sample reconstruction NLL (B,) and KL per latent dim (B, d), one reparameterized z per image."""
        mu, logvar = self.encode(x, labels)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.reconstruction_nll(self.decode_logits(z, labels), x), gaussian_kl_per_dim(mu, logvar)

    def elbo(
        self, x: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """Evidence lower bound per image (B,) in nats: -(reconstruction NLL + KL) with beta = 1, one z
        per image (drawn from `generator` on the CPU), the KL in closed form. A CVAE's is of p(x | y)."""
        labels = self.validate_labels(labels, x.shape[0])
        mu, logvar = self.encode(x, labels)  # (B, d) each
        eps = torch.randn(mu.shape, generator=generator).to(mu)  # (B, d)
        z = mu + torch.exp(0.5 * logvar) * eps
        return -(self.reconstruction_nll(self.decode_logits(z, labels), x) + gaussian_kl(mu, logvar))

    def importance_sampled_nll(
        self,
        x: Tensor,
        k: int = 100,
        chunk: int | None = None,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        """-log p(x) per image (B,) in nats, estimated with K importance samples from q(z|x):
        -log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) (Burda et al. 2016). Its expectation is a lower bound
        on the true NLL that tightens as K grows; K = 1 is the one-sample ELBO. The K samples are drawn
        `chunk` at a time (default: about 8192 decoder rows a chunk) to bound memory."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        labels = self.validate_labels(labels, x.shape[0])
        mu, logvar = self.encode(x, labels)  # (B, d) each
        std = torch.exp(0.5 * logvar)
        b, d = mu.shape
        chunk = chunk or max(1, 8192 // b)
        log_2pi = math.log(2.0 * math.pi)
        log_weights = []
        for start in range(0, k, chunk):
            kc = min(chunk, k - start)
            eps = torch.randn((kc, b, d), generator=generator).to(mu)  # (kc, B, d)
            z = mu + std * eps  # (kc, B, d)
            log_q = -0.5 * (eps.pow(2) + logvar + log_2pi).sum(dim=2)  # (kc, B) log q(z|x)
            log_prior = -0.5 * (z.pow(2) + log_2pi).sum(dim=2)  # (kc, B) log p(z)
            targets = x.expand(kc, *x.shape).reshape(kc * b, *x.shape[1:])  # (kc*B, C, H, W)
            repeated = None if labels is None else labels.repeat(kc)  # (kc*B,) matching z's rows
            logits = self.decode_logits(z.reshape(kc * b, d), repeated)
            log_likelihood = -self.reconstruction_nll(logits, targets).view(kc, b)  # (kc, B) log p(x|z)
            log_weights.append(log_likelihood + log_prior - log_q)
        return -(torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k))  # (B,)

    def training_step(self, batch: Batch, optimizer_name: str) -> StepOutput:
        c = self.config
        reconstruction, kl_per_dim = self.loss_terms_per_dim(batch.images, self.training_labels(batch))
        weight = kl_weight(self.kl_step.float(), c.kl_warmup_steps, c.beta) if c.kl_warmup_steps else c.beta
        loss = reconstruction.mean() + weight * free_bits_kl(kl_per_dim, c.free_bits)
        if c.kl_warmup_steps:
            self.kl_step += 1
        logs = {
            "loss": loss.detach(),
            "reconstruction": reconstruction.mean().detach(),
            "kl": kl_per_dim.sum(dim=1).mean().detach(),
        }
        if c.kl_warmup_steps:
            logs["beta"] = torch.as_tensor(weight).detach()
        return StepOutput(loss, logs)


def coder_networks(config: ModelConfig, code_features: int, activation: str) -> tuple[nn.Module, nn.Module]:
    """Encoder (input -> code_features) and decoder (latent [+ one-hot] -> pixel logits) for `config.arch`.
    A conditional model's encoder gets the one-hot class as extra input channels (conv) or features (mlp)."""
    classes = config.num_classes if getattr(config, "conditional", False) else 0
    channels, height, width = config.image_shape
    pixels = channels * height * width
    if config.arch == "conv":
        encoder = conv_encoder((channels + classes, height, width), config.conv_width, code_features)
        decoder = ConvUpsampler(
            config.latent_dim + classes,
            tuple(config.image_shape),
            config.conv_width,
            batch_norm=False,
            final=None,
        )
        return encoder, decoder
    hidden = tuple(config.hidden)
    encoder = mlp([pixels + classes, *hidden, code_features], activation=activation)
    decoder = mlp([config.latent_dim + classes, *reversed(hidden), pixels], activation=activation)
    return encoder, decoder


def encoder_input(x: Tensor, labels: Tensor | None, config: ModelConfig) -> Tensor:
    """The encoder's input: images flattened (mlp) or as they are (conv), with a CVAE's one-hot class
    appended as features (mlp) or as constant channels (conv)."""
    if config.arch != "conv":
        x = x.flatten(1)
    if labels is None:
        return x
    one_hot = F.one_hot(labels, config.num_classes).to(x.dtype)  # (B, K)
    if config.arch == "conv":
        one_hot = one_hot[:, :, None, None].expand(-1, -1, *x.shape[2:])  # (B, K, H, W)
    return torch.cat([x, one_hot], dim=1)


def decoder_input(z: Tensor, labels: Tensor | None, config: ModelConfig) -> Tensor:
    """The latent codes, with a CVAE's one-hot class appended."""
    if labels is None:
        return z
    return torch.cat([z, F.one_hot(labels, config.num_classes).to(z.dtype)], dim=1)
