"""Explain and export on the zoo's variants: conv nets, the conditional GAN (projection D, labels into G and
D) and the CVAE (labels into encoder and decoder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import genlab
from genlab import explain, provenance
from genlab.export import export_onnx
from tests.models.test_variants import CONV_GAN

ort = pytest.importorskip("onnxruntime")

VARIANTS = {
    "conditional-conv-gan": ("gan", {**CONV_GAN, "conditional": True, "loss": "hinge"}),
    "conditional-mlp-gan": (
        "gan",
        {"latent_dim": 8, "g_hidden": (16,), "d_hidden": (16,), "conditional": True},
    ),
    "cvae": ("vae", {"arch": "conv", "latent_dim": 4, "conv_width": 8, "conditional": True}),
    "conv-ae": ("ae", {"arch": "conv", "latent_dim": 4, "conv_width": 8, "gmm_components": 3}),
}


@pytest.fixture(scope="module")
def variant_runs(tmp_path_factory, mnist_small_npz):
    root = tmp_path_factory.mktemp("variants")
    runs = {}
    for name, (family, settings) in VARIANTS.items():
        runs[name] = root / name
        genlab.train(
            model=family, data=str(mnist_small_npz), epochs=1, batch_size=32, grid_size=4, log_every=4,
            model_args=settings, out=runs[name],
        )  # fmt: skip
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_explain_and_export_variants(variant_runs, tmp_path, name):
    run = genlab.load(variant_runs[name])
    model = run.model
    report = explain.explain_run(run, tmp_path / "explain", dims=2, steps=3, n=64)
    assert report.figures["traversal"]["dims"]
    assert ("saliency" in report.figures) == (model.name == "gan")
    if model.is_conditional:
        assert "classes" not in report.figures

    export_onnx(run, tmp_path / "onnx")
    description = json.loads((tmp_path / "onnx" / "model.json").read_text())
    decoder = next(g for n, g in description["graphs"].items() if n != "encoder")
    session = ort.InferenceSession(
        str(tmp_path / "onnx" / decoder["file"]), providers=["CPUExecutionProvider"]
    )
    z = model.sample_latent(3, torch.Generator().manual_seed(0)).float()
    labels = torch.tensor([0, 4, 9])
    feeds = {"z": z.numpy()} | ({"labels": labels.numpy()} if model.is_conditional else {})
    assert [i["name"] for i in decoder["inputs"]] == list(feeds)
    (onnx_images,) = session.run(None, feeds)
    with torch.no_grad():
        expected = model.generate(z, labels=labels if model.is_conditional else None)
    assert np.abs(onnx_images - expected.numpy()).max() < 1e-4
    if "encoder" in description["graphs"]:
        session = ort.InferenceSession(
            str(tmp_path / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"]
        )
        feeds = {"images": onnx_images} | ({"labels": labels.numpy()} if model.is_conditional else {})
        outputs = session.run(None, feeds)
        with torch.no_grad():
            encoded = model.encode(
                torch.from_numpy(onnx_images), **({"labels": labels} if model.is_conditional else {})
            )
        encoded = encoded if isinstance(encoded, tuple) else (encoded,)
        assert max(float(np.abs(o - e.numpy()).max()) for o, e in zip(outputs, encoded)) < 1e-4
    assert provenance.read(tmp_path / "explain" / explain.TRAVERSAL_PNG)["model"] == model.name
