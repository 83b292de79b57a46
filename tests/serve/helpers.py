"""Test helpers: PNG bytes, a fake class-conditional model, decoding returned images."""

from __future__ import annotations

import base64
import dataclasses
import io

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from genlab.runs import Run


def png_bytes(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def drawn_digit(size: int = 224, background: int = 0, ink: int = 255) -> bytes:
    """A '0' drawn with a thick pen, as the page's canvas sends it."""
    image = Image.new("L", (size, size), background)
    ImageDraw.Draw(image).ellipse(
        (size // 4, size // 8, 3 * size // 4, 7 * size // 8), outline=ink, width=size // 11
    )
    return png_bytes(image)


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image).copy()


def from_data_url(url: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix) :])


class FakeConditional(nn.Module):
    """A stand-in for a class-conditional VAE (the zoo's interface), wrapping a trained VAE: it records the
    labels it is given and insists on them where a conditional model would."""

    name = "cvae"
    is_conditional = True

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.config = dataclasses.replace(inner.config, num_classes=10)
        self.seen_labels: list[torch.Tensor] = []

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def num_parameters(self) -> int:
        return self.inner.num_parameters()

    def sample_latent(self, n, generator=None):
        return self.inner.sample_latent(n, generator)

    def interpolate_latents(self, a, b, t):
        return self.inner.interpolate_latents(a, b, t)

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None):
        if labels is None:
            labels = torch.randint(10, (n,), generator=generator)
        self.seen_labels.append(labels.clone())
        return self.inner.sample(n, generator=generator)

    def generate(self, z, labels=None):
        if labels is None or len(labels) != len(z):
            raise ValueError("a conditional model needs one label per code")
        self.seen_labels.append(labels.clone())
        return self.inner.generate(z)

    @torch.no_grad()
    def reconstruct(self, x, labels=None):
        if labels is None:
            raise ValueError("a conditional model needs labels")
        self.seen_labels.append(labels.clone())
        return self.inner.reconstruct(x)


def conditional_copy(served, name: str = "cvae"):
    """A ServedRun like `served` (a VAE) whose model is a FakeConditional."""
    run = served.run
    fake = FakeConditional(run.model)
    fake_run = Run(run.run_dir, run.config, fake, run.checkpoint, run.state)
    return dataclasses.replace(served, name=name, run=fake_run)
