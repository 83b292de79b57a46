"""A small run of benchmarks/serve_load.py: many concurrent clients against a real uvicorn for a few
seconds, with a deliberately small queue. Every answer is a success or a deliberate 429; none is an error."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from pathlib import Path

import httpx
import pytest

from genlab.serve import create_app

from .conftest import live_server

pytestmark = pytest.mark.slow


def load_benchmark():
    path = Path(__file__).parents[2] / "benchmarks" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("serve_load", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_concurrent_clients_get_answers_or_429_never_errors(catalog, monkeypatch):
    import genlab.serve.app as app_module

    benchmark = load_benchmark()
    real_sample = app_module.sample_png

    def slower_sample(*args):  # tiny test models answer in microseconds; real ones take a while
        time.sleep(0.02)
        return real_sample(*args)

    monkeypatch.setattr(app_module, "sample_png", slower_sample)
    with live_server(create_app(catalog, workers=1, queue=4)) as url:
        result = asyncio.run(benchmark.run_load(url, clients=40, seconds=2.0))
        summary = result.summary()
        assert summary["errors"] == 0, summary["error_kinds"]
        assert summary["requests_ok"] > 0 and summary["status_429"] > 0  # 40 clients, room for 5: some wait
        assert set(summary["ok_by_kind"]) >= {"sample", "reconstruct"}
        assert httpx.get(url + "/api/health").status_code == 200  # and it still answers at once
