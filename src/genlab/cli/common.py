"""Pieces every command module shares: the one-line-error parser, argument types, device and data helpers."""

from __future__ import annotations

import argparse

import torch

from ..errors import ConfigError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, instead of usage + error
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def int_at_least(minimum: int, words: str):
    """An argparse type: an integer >= minimum, with a message naming what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return value

    return parse


def int_in(minimum: int, maximum: int, words: str):
    """An argparse type: an integer in [minimum, maximum]; the limit is in the message."""
    at_least = int_at_least(minimum, words)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"expected {words} (at most {maximum}), got {text!r}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
nonnegative_int = int_at_least(0, "an integer >= 0")


def seed_int(text: str) -> int:
    """An argparse type: a seed torch accepts, 0 <= seed <= 2**63 - 1."""
    from ..constraints import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to 2**63 - 1, got {text!r}")
    return value


def device_name(text: str) -> str:
    """An argparse type: auto, cpu, cuda, cuda:N or mps (whether it is present is checked on use)."""
    from ..constraints import DeviceName

    if DeviceName().problem(text):
        raise argparse.ArgumentTypeError(f"expected a device: auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def device(name: str) -> str:
    from ..training.trainer import resolve_device

    return str(resolve_device(name))


def test_images(run, data: str | None, split: str) -> torch.Tensor:
    """The dataset's images in [0, 1], checked against the shape the model was trained on."""
    return test_split(run, data, split)[0]


def test_split(run, data: str | None, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The dataset's images in [0, 1] (checked against the model's shape) and its labels, if any."""
    from ..data import load_dataset

    dataset = load_dataset(data or run.config.data, split)
    expected = tuple(run.model.config.image_shape)
    if tuple(dataset.image_shape) != expected:
        raise ConfigError(f"dataset images are {tuple(dataset.image_shape)} but the model takes {expected}")
    return dataset.images.float() / 255.0, dataset.labels


def add_sampling_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sampling",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampling-only setting of the model, e.g. refine_steps=0 (a GAN's plain G(z)) or "
        "temperature=0.8 (a VAE); repeatable; `genlab models NAME` lists them",
    )


def apply_sampling(run, pairs: list[str]):
    """The run with its `--sampling key=value` settings applied (ConfigError, exit 2, for a bad one)."""
    from ..config import parse_overrides

    overrides = parse_overrides(pairs, option="--sampling")
    return run.with_sampling(**overrides) if overrides else run
