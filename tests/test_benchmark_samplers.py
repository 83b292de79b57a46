"""benchmarks/samplers.py's own logic: every sampler is a valid `--sampling` list for a GAN, and its
table combines the seeds as it says (the benchmark itself is run by hand, not in the tests)."""

from __future__ import annotations

import pytest
import torch

import genlab
from genlab.cli.common import apply_sampling
from genlab.runs import build_model

from .benchmark_scripts import benchmark_module


@pytest.fixture(scope="module")
def samplers():
    with benchmark_module("samplers") as module:
        yield module


def test_every_sampler_applies_to_a_gan(samplers) -> None:
    # no trained run needed: with_sampling checks the settings against the model's config
    tiny = {"image_shape": (1, 8, 8), "latent_dim": 3, "g_hidden": (8,), "d_hidden": (8,), "refine_steps": 5}

    class _Run:  # the part of a Run that apply_sampling uses, fresh for each sampler as the script loads
        def __init__(self):
            self.model, self.sampling_overrides = build_model("gan", tiny), {}

        with_sampling = genlab.runs.Run.with_sampling

    for name, settings in samplers.SAMPLERS.items():
        config = apply_sampling(_Run(), settings).model.config
        assert config.rejection == ("rejection=true" in settings), name
        assert config.refine_steps == {"plain G(z)": 0, "rejection (DRS)": 0, "refined (long's)": 50}.get(
            name, 100 if "DDLS" in name else 5
        )
        assert torch.is_tensor(apply_sampling(_Run(), settings).model.sample(2))


def test_the_seed_table_takes_means_and_the_widest_class_range(samplers) -> None:
    def row(seed, recognized, low, high, fid):
        return {
            "run": "runs/gan-long",
            "training_seed": 0,
            "sampler": "plain G(z)",
            "seed": seed,
            "recognized": recognized,
            "min class": low,
            "max class": high,
            "FID": fid,
            "precision": 0.8,
            "recall": 0.7,
            "coverage": 0.8,
            "s per 1k": 0.02,
        }

    text = samplers.markdown([row(0, 0.70, 0.08, 0.12, 10.0), row(1, 0.80, 0.06, 0.11, 14.0)], "header")
    per_seed, combined = text.split("Over the sampling seeds")
    assert "| gan-long (seed 0) | plain G(z) | 0 | 70.0% | 8.0% | 12.0% | 10.0 |" in per_seed
    assert "| gan-long (seed 0) | plain G(z) | 0,1 | 75.0% | 6.0% | 12.0% | 12.0 |" in combined


def test_runs_the_digit_judge_does_not_know_get_dashes(samplers) -> None:
    def row(seed, fid):
        return {
            "run": "runs/fashion-dcgan",
            "training_seed": 0,
            "sampler": "rejection (DRS)",
            "seed": seed,
            "recognized": None,
            "min class": None,
            "max class": None,
            "FID": fid,
            "precision": 0.5,
            "recall": 0.6,
            "coverage": 0.3,
            "s per 1k": 0.5,
        }

    text = samplers.markdown([row(0, 40.0), row(1, 44.0)], "header")
    assert "| fashion-dcgan (seed 0) | rejection (DRS) | 0,1 | - | - | - | 42.0 | 0.50 | 0.60 |" in text
