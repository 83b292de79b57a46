"""Synthetic datasets: unconditional with --n, conditional per class (a fake conditional model until the
conditional families land), written in the forms --data reads back."""

from __future__ import annotations

import pytest
import torch

from genlab.data import load_dataset
from genlab.errors import ConfigError
from genlab.runs import load
from genlab.uses import synth


def make_conditional(monkeypatch, run):
    """Turn a tiny run's model into a conditional one: each image's mean encodes its label. A subclass, so
    it works whether `is_conditional` is a plain attribute or a property of the real class."""
    shape = run.model.config.image_shape

    def sample(self, n, labels=None, generator=None):
        assert labels is not None and len(labels) == n
        return (labels.float()[:, None, None, None] / 10.0 + 0.05).expand(n, *shape)

    fake = type("FakeConditional", (type(run.model),), {"is_conditional": True, "sample": sample})
    monkeypatch.setattr(run.model, "__class__", fake)
    return run


def test_unconditional_needs_n(use_runs):
    run = load(use_runs / "gan")
    images, labels = synth.synthesize(run, n=7, seed=3)
    assert images.shape == (7, 1, 28, 28) and labels is None
    assert torch.equal(images, synth.synthesize(run, n=7, seed=3)[0])
    with pytest.raises(ConfigError, match="unconditional"):
        synth.synthesize(run, per_class=2)


def test_conditional_per_class_round_trips_through_the_data_loaders(use_runs, monkeypatch, tmp_path):
    run = make_conditional(monkeypatch, load(use_runs / "gan"))
    images, labels = synth.synthesize(run, per_class=3, batch_size=4)
    assert labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert torch.allclose(images.mean(dim=(1, 2, 3)), labels.float() / 10 + 0.05)
    with pytest.raises(ConfigError, match="conditional"):
        synth.synthesize(run, n=5)
    for out in (tmp_path / "synth.npz", tmp_path / "folder"):
        synth.write_dataset(images, labels, out, synth.class_names(run))
        train, test = load_dataset(str(out), "train"), load_dataset(str(out), "test")
        assert len(train) + len(test) == 30
        for part in (train, test):  # every image still carries its own label
            means = part.images.float().mean(dim=(1, 2, 3)) / 255
            assert torch.allclose(means, part.labels.float() / 10 + 0.05, atol=0.01)


def test_one_image_is_not_a_dataset(use_runs, tmp_path):
    images, labels = synth.synthesize(load(use_runs / "gan"), n=2)
    with pytest.raises(ConfigError, match="folder or an .npz"):
        synth.write_dataset(images, labels, tmp_path / "x.png")


def test_real_conditional_vae_synthesizes_and_denoises(tmp_path, mnist_small_npz):
    """With the conditional families (branch zoo) present: a tiny CVAE, end to end through the CLI."""
    from genlab.cli import main
    from genlab.models.vae import VAEConfig
    from tests.test_cli import train

    if "conditional" not in VAEConfig.__dataclass_fields__:
        pytest.skip("no conditional VAE in this genlab yet (it arrives with the model zoo)")
    assert train(tmp_path, mnist_small_npz, "vae", "--set", "model.conditional=true") == 0
    run = load(tmp_path / "vae")
    images, labels = synth.synthesize(run, per_class=2, seed=0)
    assert images.shape == (20, 1, 28, 28) and labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert main(["synth", str(tmp_path / "vae"), "--per-class", "1", "--out", str(tmp_path / "s.npz")]) == 0
    out = tmp_path / "clean.npz"  # the .npz carries labels, which a conditional denoiser needs
    assert main(["denoise", str(tmp_path / "vae"), "--in", str(mnist_small_npz), "--out", str(out)]) == 0
