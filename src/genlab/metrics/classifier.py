"""A small domain classifier: features for "Frechet classifier distance", scores and class coverage.

Inception features say little about 28x28 digits; a CNN trained on the dataset itself gives features and
label predictions that do. It trains in seconds on a CPU and is rebuilt from `ClassifierConfig.to_dict()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DataError


@dataclass
class ClassifierConfig:
    """Everything needed to rebuild a DomainClassifier before loading its weights (JSON friendly)."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W)
    num_classes: int = 10
    channels: tuple[int, int] = (32, 64)  # the two conv blocks
    feature_dim: int = 128  # width of the penultimate layer returned by features()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise DataError(
                f"unknown classifier config keys {sorted(unknown)}; expected a subset of {sorted(known)}"
            )
        d = dict(d)
        for key in ("image_shape", "channels"):  # JSON turns tuples into lists
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


class DomainClassifier(nn.Module):
    """conv(3x3) -> ReLU -> pool2 -> conv(3x3) -> ReLU -> pool2 -> fc feature_dim -> ReLU -> fc classes."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        c, h, w = config.image_shape
        c1, c2 = config.channels
        if h < 4 or w < 4:
            raise ValueError(f"images must be at least 4x4 for two 2x poolings, got {h}x{w}")
        self.conv1 = nn.Conv2d(c, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(c2 * (h // 4) * (w // 4), config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations: (N, C, H, W) in [0, 1] -> (N, feature_dim)."""
        x = x * 2.0 - 1.0  # centre the inputs
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, c1, H/2, W/2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, c2, H/4, W/4)
        return F.relu(self.fc(x.flatten(1)))  # (N, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes)."""
        return self.head(self.features(x))

    def probs(self, x: Tensor) -> Tensor:
        """Class probabilities p(y|x): (N, num_classes), rows sum to 1."""
        return self.forward(x).softmax(dim=1)


def _check_labelled_images(images_uint8: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    if images_uint8.dtype != torch.uint8:
        raise DataError(
            f"expected uint8 images (0..255), got {images_uint8.dtype}; convert with (x * 255).round().byte()"
        )
    if images_uint8.ndim == 3:
        images_uint8 = images_uint8.unsqueeze(1)  # (N, H, W) grayscale -> (N, 1, H, W)
    if images_uint8.ndim != 4:
        raise DataError(f"expected images (N, C, H, W), got shape {tuple(images_uint8.shape)}")
    labels = torch.as_tensor(labels).long().reshape(-1)
    if labels.shape[0] != images_uint8.shape[0]:
        raise DataError(f"{images_uint8.shape[0]} images but {labels.shape[0]} labels")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"labels must be in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )
    return images_uint8, labels


def _random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by up to max_shift pixels (zero fill): (B, C, H, W) -> (B, C, H, W)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)  # (B, C, H+2s, W+2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)  # (B,) each
    rows = (torch.arange(h)[None, :] + dy[:, None]).to(x.device)  # (B, H)
    cols = (torch.arange(w)[None, :] + dx[:, None]).to(x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, H, W, C) -> NCHW


def train_classifier(
    images_uint8: Tensor,
    labels: Tensor,
    num_classes: int,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_shift: int = 1,
    config: ClassifierConfig | None = None,
    num_threads: int | None = None,
) -> DomainClassifier:
    """Train a DomainClassifier with Adam (cosine-decayed lr) and cross entropy; same seed, same weights.

    Each batch is shifted by up to `max_shift` pixels (0 disables it), which helps on a few thousand images.
    num_threads sets torch's CPU threads for the loop only: this net is too small to gain from several,
    and on a busy machine intra-op threads waiting for each other can make it several times slower.
    Returns the model in eval mode on `device`.
    """
    with _torch_threads(num_threads):
        return _train(
            images_uint8, labels, num_classes, epochs, batch_size, lr, seed, device, max_shift, config
        )


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op CPU threads (None: leave them alone)."""
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train(
    images_uint8: Tensor,
    labels: Tensor,
    num_classes: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | torch.device,
    max_shift: int,
    config: ClassifierConfig | None,
) -> DomainClassifier:
    images_uint8, labels = _check_labelled_images(images_uint8, labels, num_classes)
    n = images_uint8.shape[0]
    if n == 0:
        raise DataError("no training images")
    if config is None:
        config = ClassifierConfig(image_shape=tuple(images_uint8.shape[1:]), num_classes=num_classes)
    elif tuple(config.image_shape) != tuple(images_uint8.shape[1:]) or config.num_classes != num_classes:
        raise ValueError(
            f"config {config} does not match images {tuple(images_uint8.shape[1:])} / {num_classes} classes"
        )
    with torch.random.fork_rng(devices=[]):  # seed the weight init without touching the caller's RNG
        torch.manual_seed(seed)
        model = DomainClassifier(config).to(device)
    generator = torch.Generator().manual_seed(seed)  # data order and shifts, on CPU
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = max(1, epochs * math.ceil(n / batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(  # cosine decay to 0: the last epochs settle the weights
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))
    )
    data = images_uint8.to(device)  # (N, C, H, W) uint8, converted per batch to save memory
    targets = labels.to(device)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = data[idx].float() / 255.0  # (B, C, H, W) in [0, 1]
            if max_shift > 0:
                x = _random_shift(x, max_shift, generator)
            loss = F.cross_entropy(model(x), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def extract(model: DomainClassifier, images_float01: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Features (N, feature_dim) and probabilities (N, num_classes), float32 on CPU, in batches."""
    if images_float01.dtype == torch.uint8:
        raise DataError("extract() takes float images in [0, 1]; divide uint8 images by 255")
    if images_float01.ndim != 4:
        raise DataError(f"expected images (N, C, H, W), got shape {tuple(images_float01.shape)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats, probs = [], []
    for start in range(0, images_float01.shape[0], batch_size):
        x = images_float01[start : start + batch_size].to(device, torch.float32)
        f = model.features(x)  # (B, feature_dim)
        feats.append(f.cpu())
        probs.append(model.head(f).softmax(dim=1).cpu())  # (B, num_classes)
    model.train(was_training)
    num_classes = model.config.num_classes
    if not feats:
        return torch.empty(0, model.config.feature_dim), torch.empty(0, num_classes)
    return torch.cat(feats), torch.cat(probs)


def accuracy(model: DomainClassifier, images_uint8: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Share of images whose arg-max prediction equals the label."""
    images_uint8, labels = _check_labelled_images(images_uint8, labels, model.config.num_classes)
    if images_uint8.shape[0] == 0:
        raise DataError("no images to score")
    _, probs = extract(model, images_uint8.float() / 255.0, batch_size=batch_size)
    return float((probs.argmax(dim=1) == labels).double().mean())


def classifier_score(probs: Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))): Inception-Score-like, single split; 1 (worst) .. num_classes (best).

    High when each prediction is confident and the predictions are spread over all classes.
    """
    p = torch.as_tensor(probs).detach().double()  # (N, K)
    if p.ndim != 2 or p.shape[0] == 0:
        raise DataError(f"probs must be a non-empty (N, num_classes) matrix, got shape {tuple(p.shape)}")
    if (p < 0).any() or not torch.allclose(p.sum(dim=1), torch.ones(p.shape[0], dtype=p.dtype), atol=1e-4):
        raise DataError("probs rows must be non-negative and sum to 1; pass softmax outputs, not logits")
    marginal = p.mean(dim=0, keepdim=True)  # (1, K) p(y)
    # KL with 0 log 0 = 0; where p > 0 the marginal is > 0 too, so the log is finite.
    kl = (torch.xlogy(p, p) - torch.xlogy(p, marginal.expand_as(p))).sum(dim=1)  # (N,)
    return float(torch.exp(kl.mean()))


def class_coverage(probs_or_predicted_labels: Tensor, num_classes: int) -> dict[str, Any]:
    """How evenly predictions spread over the classes: a collapsed generator covers few of them.

    Takes probabilities (N, K) (arg-max is used) or predicted labels (N,). Returns shares per class, the
    entropy of the histogram divided by log(num_classes) (1 = uniform, 0 = one class), the rarest class
    (lowest index on ties; a missing class has share 0) and how many classes were predicted at least once.
    """
    t = torch.as_tensor(probs_or_predicted_labels).detach()
    if t.ndim == 2:
        if t.shape[1] != num_classes:
            raise DataError(f"probs have {t.shape[1]} columns but num_classes={num_classes}")
        predicted = t.argmax(dim=1)
    elif t.ndim == 1:
        predicted = t.long()
    else:
        raise DataError(f"expected probs (N, K) or labels (N,), got shape {tuple(t.shape)}")
    if predicted.numel() == 0:
        raise DataError("no predictions to count")
    if predicted.min() < 0 or predicted.max() >= num_classes:
        raise DataError(
            f"predicted labels must be in [0, {num_classes}), got [{int(predicted.min())}, {int(predicted.max())}]"
        )
    counts = torch.bincount(predicted.cpu(), minlength=num_classes)  # (K,)
    shares = counts.double() / counts.sum()  # (K,)
    entropy = float(-torch.xlogy(shares, shares).sum())
    normalized = entropy / math.log(num_classes) if num_classes > 1 else 1.0
    rarest = int(torch.argmin(shares))
    return {
        "counts": [int(c) for c in counts],
        "shares": [float(s) for s in shares],
        "normalized_entropy": normalized,
        "rarest_class": rarest,
        "rarest_share": float(shares[rarest]),
        "num_classes_found": int((counts > 0).sum()),
        "num_classes": num_classes,
    }
