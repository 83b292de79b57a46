"""Shared fixtures: an isolated offline data dir for every test, tiny model settings, a tiny dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.data import ImageDataset, load_dataset

# Tiny settings per registered model, for the contract test and fast trainings. A new family must add
# an entry here: the contract test fails for any registered model without one.
TINY_MODEL_ARGS = {
    "gan": {"latent_dim": 8, "g_hidden": (32,), "d_hidden": (32,)},
    "vae": {"arch": "mlp", "latent_dim": 4, "hidden": (32,), "sampler": "prior"},
    "ae": {"arch": "mlp", "latent_dim": 4, "hidden": (32,), "gmm_components": 3},
}


@pytest.fixture(autouse=True)
def offline_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads ~/.cache or reaches the network unless it sets that up itself."""
    home = tmp_path_factory.mktemp("genlab-data")
    monkeypatch.setenv("GENLAB_DATA", str(home))
    monkeypatch.setenv("GENLAB_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def mnist_small() -> ImageDataset:
    """256 real digits from the embedded mnist-5k training split, all ten classes (it is ordered by class,
    so every 17th digit)."""
    full = load_dataset("mnist-5k", "train")
    pick = slice(0, 17 * 256, 17)
    return ImageDataset("mnist-small", full.images[pick].clone(), full.labels[pick].clone(), full.class_names)


@pytest.fixture(scope="session")
def mnist_small_npz(tmp_path_factory: pytest.TempPathFactory, mnist_small: ImageDataset) -> Path:
    """The same 256 digits as an .npz, for CLI tests (images (N, H, W) uint8, labels)."""
    path = tmp_path_factory.mktemp("npz") / "digits.npz"
    np.savez(path, images=mnist_small.images[:, 0].numpy(), labels=mnist_small.labels.numpy())
    return path


@pytest.fixture(autouse=True)
def _fixed_threads():
    """Same thread count in every test, so float results do not depend on what ran before."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory, mnist_small_npz: Path) -> dict[str, Path]:
    """One-epoch gan/vae/ae runs (EMA kept) on the 256 digits, shared by the provenance, explain and export
    tests; tests read them and write elsewhere."""
    from tests.trust_runs import train_tiny

    root = tmp_path_factory.mktemp("tiny-runs")
    return {name: train_tiny(root, mnist_small_npz, name, ema_decay=0.9) for name in ("gan", "vae", "ae")}
