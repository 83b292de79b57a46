"""Tiny trained runs (a GAN, a VAE, a denoising autoencoder) and a test client over them."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi", reason="genlab serve needs the serve extra: pip install -e '.[serve]'")

from tests.conftest import TINY_MODEL_ARGS  # noqa: E402


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory, mnist_small_npz) -> dict:
    """name -> run dir of four runs trained for one epoch on 256 labelled digits."""
    import genlab

    root = tmp_path_factory.mktemp("served-runs")
    recipes = {
        "gan": ("gan", {}),
        "vae": ("vae", {}),
        "dae": ("ae", {"noise_std": 0.3}),
        "cvae": ("vae", {"conditional": True}),  # class-conditional: the zoo's CVAE
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENLAB_DATA", str(root / "data"))
        patch.setenv("GENLAB_OFFLINE", "1")
        for name, (model, extra) in recipes.items():
            genlab.train(
                {"model": model, "data": str(mnist_small_npz), "epochs": 1, "batch_size": 64},
                out=root / name,
                grid_size=4,
                log_every=1,
                model_args={**TINY_MODEL_ARGS[model], **extra},
            )
    torch.set_num_threads(threads)
    return {name: root / name for name in recipes}


@pytest.fixture(scope="session")
def catalog(served_runs):
    from genlab.serve import load_catalog

    return load_catalog(served_runs)


@pytest.fixture()
def client(catalog):
    from fastapi.testclient import TestClient

    from genlab.serve import create_app

    with TestClient(create_app(catalog, workers=1, queue=4)) as test_client:
        yield test_client


@contextlib.contextmanager
def live_server(app):
    """A real uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
