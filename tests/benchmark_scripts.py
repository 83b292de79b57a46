"""Load a script of benchmarks/ as a module, for the tests that check a benchmark's own logic."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextlib.contextmanager
def benchmark_module(script: str) -> Iterator[ModuleType]:
    """benchmarks/<script>.py imported as `<script>_benchmark`, with benchmarks/ on sys.path for its own
    imports (families, sample_quality) while the module is in use."""
    name = f"{script}_benchmark"
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
        sys.path.remove(str(BENCHMARKS))
