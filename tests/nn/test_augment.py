"""DiffAugment ops: each does exactly its transformation, is differentiable, and the GAN applies the
policy to what its discriminator sees (real and fake, in both steps)."""

from __future__ import annotations

import pytest
import torch

from genlab.errors import ConfigError
from genlab.models.base import Batch
from genlab.nn.augment import augment, color, cutout, parse_policy, translate
from genlab.runs import build_model


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (C, H, W) moved down dy and right dx, border pixels repeated: the reference for translate."""
    h, w = x.shape[1:]
    rows = (torch.arange(h) - dy).clamp(0, h - 1)
    cols = (torch.arange(w) - dx).clamp(0, w - 1)
    return x[:, rows][:, :, cols]


def test_translate_shifts_each_image_by_its_own_offset_within_an_eighth():
    torch.manual_seed(0)
    x = torch.rand(32, 2, 16, 16)
    out = translate(x)
    offsets = set()
    for image, moved in zip(x, out):
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(shifted(image, dy, dx), moved)
        ]
        assert len(found) == 1, "each output is exactly one shift of its input, at most 2 = 16/8 pixels"
        offsets.add(found[0])
    assert len(offsets) > 5  # per-image offsets, not one for the batch


def test_cutout_writes_one_square_of_half_the_side_with_the_fill():
    torch.manual_seed(1)
    x = torch.rand(64, 1, 12, 12) + 1.0  # never equal to the fill
    out = cutout(x, fill=-1.0)
    full_squares = 0
    for image, cut in zip(x, out):
        erased = cut[0] == -1.0
        assert torch.equal(cut[0][~erased], image[0][~erased])
        rows, cols = erased.any(1).nonzero().flatten(), erased.any(0).nonzero().flatten()
        assert erased.sum() == len(rows) * len(cols)  # one axis-aligned rectangle
        assert 1 <= len(rows) <= 6 and 1 <= len(cols) <= 6  # a 6x6 square, clipped at the border
        full_squares += len(rows) == len(cols) == 6
    assert full_squares > 10


def test_color_is_a_per_image_brightness_and_contrast_change():
    torch.manual_seed(2)
    x = torch.rand(8, 3, 4, 4)
    out = color(x)
    for image, changed in zip(x, out):
        # out = (x + b - m) * c + m with m = mean(x + b): an affine map of x with slope c in [0.5, 1.5]
        slope = (changed.flatten()[1] - changed.flatten()[0]) / (image.flatten()[1] - image.flatten()[0])
        assert 0.5 <= float(slope) <= 1.5
        torch.testing.assert_close(changed - changed.mean(), (image - image.mean()) * slope)


def test_the_ops_are_differentiable():
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    augment(x, ("color", "translation", "cutout")).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_policies_are_checked():
    assert parse_policy(" translation, cutout ") == ("translation", "cutout")
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        parse_policy("translation,flip")
    for bad in ("flip", "cutout,cutout"):
        with pytest.raises(ConfigError, match="augment must be '' or a comma-separated list"):
            build_model("gan", {"augment": bad, "image_shape": (1, 28, 28)})


def test_the_gan_discriminator_sees_augmented_real_and_fake_images_in_both_steps():
    torch.manual_seed(0)
    settings = {"arch": "conv", "latent_dim": 4, "g_width": 4, "d_width": 4, "augment": "cutout"}
    model = build_model("gan", {**settings, "image_shape": (1, 16, 16)})
    seen = []
    model.discriminator.body.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    real = torch.ones(6, 1, 16, 16)  # bright everywhere: any -1 pixel is a cutout's fill
    for name in ("d", "g"):
        model.training_step(Batch(real), name)
    assert len(seen) == 3  # D step: real and fake; G step: fake
    for inputs in seen:
        assert ((inputs == -1.0).flatten(1).sum(1) > 0).all()  # every image got its square
    plain = build_model("gan", {**settings, "augment": "", "image_shape": (1, 16, 16)})
    seen.clear()
    plain.discriminator.body.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    plain.training_step(Batch(real), "d")
    assert torch.equal(seen[0], real)
