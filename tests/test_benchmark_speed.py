"""benchmarks/speed.py's timed loops run (tiny sizes) and its table carries every figure; the benchmark
itself runs by hand under the CPU lock."""

from __future__ import annotations

import pytest

from genlab.models.gan import GAN
from genlab.training import speed as levers

from .benchmark_scripts import benchmark_module


@pytest.fixture(scope="module")
def speed():
    with benchmark_module("speed") as module:
        yield module


@pytest.mark.parametrize("case", ["gan-article", "vae-default"])
def test_genlab_and_plain_loops_time_their_steps(speed, case):
    for figures in (
        speed.time_genlab(speed.CASES[case], 8, warmup=1, steps=2, levers={"share_fake_batch": False}),
        speed.time_plain(speed.CASES[case], 8, warmup=1, steps=2),
    ):
        assert figures["images_per_s"] > 0 and figures["first_step_s"] > 0 and figures["peak_rss_mib"] > 0
    assert GAN.share_fake_batch and levers.LEVERS["fused_optimizers"]  # levers back to the defaults


def test_every_variant_names_real_settings(speed):
    assert set(speed.LOOPS) >= {"genlab", "plain"}
    for name, variant in speed.VARIANTS.items():
        assert set(variant) <= {"levers", "precision", "compile", "threads"}, name
        for lever in variant.get("levers", {}):
            assert lever == "share_fake_batch" or lever in levers.LEVERS, lever


def test_table_has_ratios_and_the_keras_reason(speed):
    row = {"case": "gan-article", "loop": "genlab-unfused", "batch_size": 128, "images_per_s": 900.0}
    row.update(ratio_to_plain=0.9, genlab_gain=1.1, first_step_s=1.5, peak_rss_mib=400.0)
    results = {"machine": "m", "device": "cpu", "date": "d", "command": "c", "repeats": 3}
    results.update(
        measured_steps=40, warmup_steps=10, rows=[row], skipped=[{"loop": "keras", "reason": "no TF"}]
    )
    table = speed.markdown(results)
    assert "| gan-article | genlab-unfused | 128 | 900 | 0.90 | 1.10x | 1.50 | 400 |" in table
    assert "keras loop: skipped (no TF)" in table
