"""benchmarks/gpu_check.py's CPU dry run: every family, both precisions and the compiled path run end to
end through genlab's Trainer, the CPU-vs-device agreement check runs, and the JSON/markdown are written.
The real figures need a GPU (benchmarks/gpu_check.sh on the GPU machine)."""

from __future__ import annotations

import json

import pytest
import torch

from .benchmark_scripts import benchmark_module


@pytest.fixture(scope="module")
def gpu_check():
    with benchmark_module("gpu_check") as module:
        yield module


@pytest.mark.slow
def test_cpu_dry_run_writes_every_row_and_agreement(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    cases = ["gan-article", "gan-dcgan", "vae-default"]
    assert gpu_check.main(["--device", "cpu", "--tiny", "--cases", *cases, "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    rows = results["rows"]
    assert {(r["case"], r["precision"], r["compile"]) for r in rows} == {
        (case, precision, compiled)
        for case in cases
        for precision, compiled in (("fp32", False), ("bf16", False), ("bf16", True))
    }
    for row in rows:
        assert "error" not in row, row
        assert row["images_per_s"] > 0 and row["epoch_s"] == pytest.approx(64 / row["images_per_s"])
    assert [r["case"] for r in results["agreement"]] == cases
    assert all(r["agree"] and r["steps"] == 2 for r in results["agreement"])
    assert "| gan-dcgan | 8 | bf16 | yes |" in out.with_suffix(".md").read_text()


def test_randomness_drawn_on_the_cpu_is_the_same_for_every_device_and_restored(gpu_check):
    randn = torch.randn
    with gpu_check.cpu_drawn_randomness(7):
        a = torch.randn(2, 3, device="cpu")
        b = torch.rand((4,))
        c = torch.randn_like(torch.zeros(5))
    expected = torch.Generator().manual_seed(7)
    torch.testing.assert_close(a, torch.randn(2, 3, generator=expected))
    torch.testing.assert_close(b, torch.rand(4, generator=expected))
    torch.testing.assert_close(c, torch.randn(5, generator=expected))
    assert torch.randn is randn


def test_a_loss_mismatch_is_reported(gpu_check, monkeypatch, tmp_path):
    calls = []

    def fake_losses(case, device, steps, batch):  # the first run (the CPU's) and the device's differ
        calls.append(device)
        return [{"loss": 1.0 if len(calls) == 1 else 1.1}] * steps

    monkeypatch.setattr(gpu_check, "losses_of", fake_losses)
    monkeypatch.setattr(gpu_check, "speed_rows", lambda args, deadline, compiled=False: [])
    out = tmp_path / "g.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--cases", "vae-default", "--out", str(out)]) == 1
    assert json.loads(out.read_text())["agreement"][0]["agree"] is False
