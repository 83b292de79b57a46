"""genlab explain: latent rankings match their definitions, class directions and GAN saliency maps."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import genlab
from genlab import explain, provenance
from genlab.cli import main


@pytest.fixture
def runs(tiny_runs) -> dict[str, Path]:
    return tiny_runs


def test_vae_ranks_dimensions_by_kl_and_finds_class_directions(runs, tmp_path):
    run = genlab.load(runs["vae"])
    report = explain.explain_run(run, tmp_path, dims=3, steps=5, n=200, seed=0)
    images, labels = explain._data(run, 200, 0)
    with torch.no_grad():
        mu, logvar = run.model.encode(images)
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp())).mean(0)  # per dimension, by hand
    figures = report.figures["traversal"]
    assert figures["dims"] == torch.argsort(kl, descending=True)[:3].tolist()
    assert torch.allclose(torch.tensor(figures["scores"]), kl.sort(descending=True).values[:3], atol=1e-5)
    classes = report.figures["classes"]
    assert classes["classes"] == list(range(10)) and set(classes["swap_success"]) == set(range(10))
    assert all(0.0 <= v <= 1.0 for v in classes["swap_success"].values())
    names = {p.name for p in report.written}
    assert names == {explain.REPORT_MD, explain.TRAVERSAL_PNG, explain.CLASSES_PNG}
    assert provenance.read(tmp_path / explain.TRAVERSAL_PNG)["kind"] == "latent traversal"
    markdown = (tmp_path / explain.REPORT_MD).read_text()
    assert "mean KL(q(z_i|x)" in markdown and "Swap test" in markdown and "saliency" not in markdown


def test_autoencoder_ranks_by_code_variance(runs, tmp_path):
    run = genlab.load(runs["ae"])
    report = explain.explain_run(run, tmp_path, dims=2, steps=3, n=100, seed=1)
    images, _ = explain._data(run, 100, 1)
    with torch.no_grad():
        variance = run.model.encode(images).var(0)
    assert report.figures["traversal"]["dims"] == torch.argsort(variance, descending=True)[:2].tolist()
    assert "variance of the images' codes" in report.markdown


def test_gan_gets_saliency_and_no_class_directions(runs, tmp_path):
    run = genlab.load(runs["gan"])
    report = explain.explain_run(run, tmp_path, dims=2, steps=3, n=64, seed=0)
    assert (tmp_path / explain.SALIENCY_PNG).is_file() and not (tmp_path / explain.CLASSES_PNG).exists()
    assert "need an encoder" in report.markdown
    saliency = report.figures["saliency"]
    assert 0.0 < saliency["d_prob_samples"] < 1.0 and 0.0 <= saliency["stroke_share_real"] <= 1.0
    assert (
        provenance.read(tmp_path / explain.SALIENCY_PNG)["digital_source_type"] == provenance.IPTC_COMPOSITE
    )


def test_sweep_variance_finds_the_only_dimension_that_matters():
    model = LinearGenerator(torch.tensor([0.0, 2.0, 0.5]))
    scores = explain._sweep_variance(model, torch.zeros(3), torch.ones(3), steps=5)
    assert scores.argmax() == 1 and scores[0] == 0
    assert torch.isclose(scores[1] / scores[2], torch.tensor(16.0))  # variance scales with weight^2


def test_saliency_of_a_linear_discriminator_is_its_weights():
    weights = torch.randn(1, 4, 4)
    model = SimpleNamespace(input_range="tanh")

    def score(x, labels):
        return (x.flatten(1) * weights.flatten()).sum(1)

    maps, probability = explain._input_gradients(model, score, torch.rand(3, 1, 4, 4), None)
    expected = weights.abs()[0] / weights.abs().max()
    assert torch.allclose(maps, expected.expand(3, 4, 4), atol=1e-6)
    assert 0.0 < probability < 1.0


def test_discriminator_gets_labels_when_it_takes_them():
    seen = {}

    class Conditional(nn.Module):
        def discriminate(self, images, labels=None):
            seen["labels"] = labels
            return images.flatten(1).sum(1)

    score = explain._discriminator(Conditional())
    score(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]))
    assert seen["labels"].tolist() == [0, 1]


def test_conditional_model_traversal_passes_labels(tmp_path, mnist_small_npz):
    """A stand-in for the conditional GANs of the `zoo` branch: generate() refuses to run without labels."""
    model = ConditionalGenerator()
    checkpoint = tmp_path / "checkpoints" / "step-1"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    run = SimpleNamespace(
        model=model,
        run_dir=tmp_path,
        checkpoint=checkpoint,
        config=SimpleNamespace(data=str(mnist_small_npz), preset="default"),
    )
    report = explain.explain_run(run, tmp_path / "out", dims=2, steps=3, n=32)
    assert report.figures["traversal"]["dims"] and "saliency" in report.figures
    assert "input of this conditional model" not in report.markdown  # no encoder: says it needs one
    assert "need an encoder" in report.markdown


def test_cli_explain_and_errors(runs, tmp_path, capsys):
    assert main(["explain", str(runs["vae"]), "--out", str(tmp_path), "--dims", "2", "--n", "50"]) == 0
    assert (tmp_path / explain.REPORT_MD).is_file()
    capsys.readouterr()
    assert main(["explain", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["explain", str(runs["vae"]), "--dims", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


class LinearGenerator(nn.Module):
    """images = sigmoid-free linear map: every pixel is w . z, so sweeping dim i varies pixels by w_i."""

    name = "linear"
    input_range = "unit"

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.weights = weights
        self.config = SimpleNamespace(latent_dim=len(weights), image_shape=(1, 2, 2), num_classes=1)
        self.anchor = nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.anchor.device

    def generate(self, z):
        return (z @ self.weights)[:, None, None, None].expand(-1, 1, 2, 2)


class ConditionalGenerator(nn.Module):
    name = "fake-conditional"
    input_range = "tanh"
    is_conditional = True

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(latent_dim=3, image_shape=(1, 28, 28), num_classes=10)
        self.net = nn.Linear(3 + 10, 784)
        self.discriminator_net = nn.Linear(784 + 10, 1)

    @property
    def device(self):
        return self.net.weight.device

    def sample_latent(self, n, generator=None):
        return torch.randn(n, 3, generator=generator)

    def generate(self, z, labels=None):
        if labels is None:
            raise ValueError("conditional: labels are required")
        onehot = nn.functional.one_hot(labels, 10).float()
        return torch.sigmoid(self.net(torch.cat([z, onehot], 1))).view(-1, 1, 28, 28)

    def discriminate(self, images, labels=None):
        onehot = nn.functional.one_hot(labels, 10).float()
        return self.discriminator_net(torch.cat([images.flatten(1), onehot], 1)).squeeze(1)
