"""ONNX export: every family's graphs run in onnxruntime at any batch size and match PyTorch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.export import export_onnx, latent_prior
from genlab.runs import build_model

ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def runs(tiny_runs) -> dict[str, Path]:
    return tiny_runs


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ["gan", "vae", "ae"])
def test_exported_graphs_match_pytorch_at_other_batch_sizes(runs, tmp_path, name):
    run = genlab.load(runs[name])
    written = export_onnx(run, tmp_path)
    description = json.loads((tmp_path / "model.json").read_text())
    assert {p.name for p in written} == {"model.json", *(g["file"] for g in description["graphs"].values())}
    model = run.model
    decoder_name = "generator" if name == "gan" else "decoder"
    assert set(description["graphs"]) == ({decoder_name} if name == "gan" else {decoder_name, "encoder"})
    for batch in (1, 5):  # exported with batch 2: the batch axis must be dynamic
        z = model.sample_latent(batch, torch.Generator().manual_seed(batch)).float()
        decoder = session(tmp_path / description["graphs"][decoder_name]["file"])
        (onnx_images,) = decoder.run(None, {"z": z.numpy()})
        with torch.no_grad():
            torch_images = model.generate(z).numpy()
        assert onnx_images.shape == (batch, *model.config.image_shape)
        assert np.abs(onnx_images - torch_images).max() < 1e-4
        assert onnx_images.min() >= 0.0 and onnx_images.max() <= 1.0
        if name != "gan":
            images = torch.from_numpy(onnx_images)
            outputs = session(tmp_path / "encoder.onnx").run(None, {"images": onnx_images})
            with torch.no_grad():
                expected = model.encode(images)
            expected = expected if isinstance(expected, tuple) else (expected,)
            assert len(outputs) == len(expected)
            for got, want in zip(outputs, expected):
                assert got.shape == (batch, model.config.latent_dim)
                assert np.abs(got - want.numpy()).max() < 1e-4


def test_model_json_describes_each_graph(runs, tmp_path):
    run = genlab.load(runs["vae"])
    export_onnx(run, tmp_path)
    description = json.loads((tmp_path / "model.json").read_text())
    assert description["latent_prior"]["kind"] == "standard normal"
    assert description["provenance"]["checkpoint_sha256"] == genlab.provenance.checkpoint_sha256(
        run.checkpoint
    )
    for graph in description["graphs"].values():
        onnx_session = session(tmp_path / graph["file"])
        for described, actual in (
            (graph["inputs"], onnx_session.get_inputs()),
            (graph["outputs"], onnx_session.get_outputs()),
        ):
            assert [d["name"] for d in described] == [a.name for a in actual]
            for d, a in zip(described, actual):
                assert a.shape[0] == "batch" and list(a.shape[1:]) == d["shape"][1:] and d["meaning"]
    assert [o["name"] for o in description["graphs"]["encoder"]["outputs"]] == ["mu", "logvar"]
    assert description["graphs"]["decoder"]["outputs"][0]["range"] == [0.0, 1.0]


def test_autoencoder_export_carries_its_mixture_prior(runs, tmp_path):
    run = genlab.load(runs["ae"])
    export_onnx(run, tmp_path)
    prior = json.loads((tmp_path / "model.json").read_text())["latent_prior"]
    assert np.allclose(prior["means"], run.model.prior.means.numpy())
    assert np.isclose(np.exp(prior["log_weights"]).sum(), 1.0, atol=1e-5)


def test_cli_export_and_its_errors(runs, tmp_path, capsys, monkeypatch):
    assert main(["export", str(runs["gan"]), "--format", "onnx", "--out", str(tmp_path / "gan")]) == 0
    assert (tmp_path / "gan" / "generator.onnx").is_file()
    capsys.readouterr()
    assert main(["export", str(runs["gan"]), "--format", "tflite", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", str(runs["gan"]), "--out", str(tmp_path / "x")]) == 2
    assert "genlab[export]" in capsys.readouterr().err


TINY_CONV_VAE = {"arch": "conv", "latent_dim": 3, "conv_width": 4, "image_shape": (1, 28, 28)}


def test_a_vae_with_a_code_mixture_exports_it_with_its_temperature():
    prior = latent_prior(build_model("vae", {**TINY_CONV_VAE, "temperature": 0.5}))
    assert prior["kind"] == "standard normal" and prior["std"] == 0.5
    model = build_model("vae", {**TINY_CONV_VAE, "sampler": "gmm", "gmm_components": 2, "temperature": 0.7})
    model.fit_sampler(torch.rand(20, 1, 28, 28))
    prior = latent_prior(model)
    assert np.allclose(prior["means"], model.code_mixture.means.numpy()) and prior["temperature"] == 0.7


def test_a_cvae_exports_each_class_mixture():
    model = build_model(
        "vae", {**TINY_CONV_VAE, "conditional": True, "num_classes": 3, "sampler": "gmm", "gmm_components": 2}
    )
    labels = torch.arange(30) % 3
    images = torch.rand(30, 1, 28, 28) * (1 + labels[:, None, None, None]) / 3  # classes differ in codes
    model.fit_sampler(images, labels)
    prior = latent_prior(model)
    assert len(prior["per_class"]) == 3 and "per_class_use" in prior
    for k, mixture in enumerate(model.class_mixtures):
        exported = prior["per_class"][k]
        assert np.allclose(exported["means"], mixture.means.numpy())
        assert np.allclose(exported["scale_tril"], mixture.scale_tril.numpy())
        assert np.allclose(exported["log_weights"], mixture.log_weights.numpy())
    assert not np.allclose(prior["per_class"][0]["means"], prior["per_class"][2]["means"])
    # a plain VAE mixture has no per-class part
    plain = build_model("vae", {**TINY_CONV_VAE, "sampler": "gmm", "gmm_components": 2})
    plain.fit_sampler(images)
    assert "per_class" not in latent_prior(plain)


def test_a_gan_that_refines_or_rejects_its_samples_says_the_graph_does_not():
    tiny = {"image_shape": (1, 8, 8), "latent_dim": 3, "g_hidden": (8,), "d_hidden": (8,)}
    plain = latent_prior(build_model("gan", tiny))
    assert "refinement_not_exported" not in plain and "rejection_not_exported" not in plain
    prior = latent_prior(build_model("gan", {**tiny, "refine_steps": 7}))
    assert "7 Langevin steps" in prior["refinement_not_exported"] and prior["kind"] == "standard normal"
    assert "rejection_not_exported" not in prior
    prior = latent_prior(build_model("gan", {**tiny, "refine_steps": 7, "rejection": True}))
    assert "exp(d - M)" in prior["rejection_not_exported"] and "refinement_not_exported" in prior
