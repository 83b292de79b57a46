"""Shared inputs of the hostile-input corpus: tiny trained runs and a small dataset, made once a session.
Cases read them (and `check_case` checks they are left unchanged); a case that must damage a run copies
it into its own tmp dir first."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def places(tiny_runs: dict[str, Path], mnist_small_npz: Path) -> dict[str, Path]:
    """Placeholders of corpus argv: {ae}, {vae}, {gan} (one-epoch runs on 256 digits) and {digits}."""
    return {**tiny_runs, "digits": mnist_small_npz}
