"""A quickly trained mnist-5k domain classifier and its real statistics, made once per session and
copied into each test's private data dir, so evaluation tests skip the ~15 s default training."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.data import load_dataset
from genlab.evaluation import extractors
from genlab.evaluation.real_stats import real_statistics

FAST_RECIPE = extractors.ClassifierRecipe(epochs=1)  # ~92% test accuracy in a few seconds


@pytest.fixture(scope="session")
def evaluation_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluation-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENLAB_DATA", str(root))
        patch.setenv("GENLAB_OFFLINE", "1")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the nets are tiny; two threads crawl when another process is busy
        try:
            classifier = extractors.get_classifier("mnist-5k", recipe=FAST_RECIPE)
            for split in ("train", "test"):
                real_statistics(load_dataset("mnist-5k", split), "mnist-5k", split, classifier)
        finally:
            torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """250 mnist-5k digits of all ten classes (every 18th; the split is sorted by class) as an .npz."""
    full = load_dataset("mnist-5k", "train")
    path = tmp_path_factory.mktemp("digits") / "digits10.npz"
    np.savez(path, images=full.images[::18, 0].numpy(), labels=full.labels[::18].numpy())
    return path


@pytest.fixture(autouse=True)
def fast_classifier(evaluation_cache: Path, offline_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test here sees the session's classifier and statistics as if genlab had made them."""
    monkeypatch.setattr(extractors, "DEFAULT_RECIPE", FAST_RECIPE)
    for name in os.listdir(evaluation_cache):
        shutil.copytree(evaluation_cache / name, offline_data_dir / name, dirs_exist_ok=True)
    torch.set_num_threads(1)  # conftest's _fixed_threads restores the count afterwards
    return offline_data_dir
