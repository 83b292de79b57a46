"""Tiny trained runs shared by the uses tests (one epoch each: seconds)."""

from __future__ import annotations

import pytest
import torch

from tests.test_cli import train


@pytest.fixture(scope="session")
def use_runs(tmp_path_factory, mnist_small_npz):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("use-runs")
    for name in ("ae", "vae", "gan"):
        assert train(root, mnist_small_npz, name) == 0
    return root
