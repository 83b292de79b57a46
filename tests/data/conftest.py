"""Fixtures of the data tests: an isolated cache dir, the shared MNIST files, and a local HTTP mirror."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from genlab.data import download

SHARED_MNIST = (Path(__file__).resolve().parents[2] / "../shared/datasets/mnist").resolve()
SHARED_FILES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"]


@pytest.fixture(autouse=True)
def isolated_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty GENLAB_DATA, no system dirs and mirrors that refuse at once, so no
    test reads ~/.cache, depends on installed packages or reaches the internet unless it asks to."""
    home = tmp_path / "genlab-data"
    monkeypatch.setenv("GENLAB_DATA", str(home))
    monkeypatch.delenv("GENLAB_OFFLINE", raising=False)
    monkeypatch.setattr(download, "SYSTEM_DIRS", [])
    monkeypatch.setattr(download, "MIRRORS", {name: ["http://127.0.0.1:9/"] for name in download.MIRRORS})
    monkeypatch.setattr(download, "TIMEOUT_S", 5.0)
    return home


@pytest.fixture
def shared_mnist() -> Path:
    """/work/shared/datasets/mnist: the real t10k files and train labels (skip the test when absent)."""
    if not all((SHARED_MNIST / f).is_file() for f in SHARED_FILES):
        pytest.skip(f"shared MNIST files not found in {SHARED_MNIST}")
    return SHARED_MNIST


@dataclass
class Mirror:
    """A directory served over HTTP on 127.0.0.1; `requests` records the paths asked for."""

    root: Path
    url: str
    server: http.server.ThreadingHTTPServer
    requests: list[str] = field(default_factory=list)
    stopped: bool = False

    def stop(self) -> None:
        if not self.stopped:
            self.server.shutdown()
            self.server.server_close()
            self.stopped = True


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Factory: serve(dirname) starts a mirror of tmp_path/dirname; all are stopped after the test."""
    mirrors: list[Mirror] = []

    def start(name: str) -> Mirror:
        root = tmp_path / name
        root.mkdir(exist_ok=True)
        seen: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                seen.append(self.path)

        handler = functools.partial(Handler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        mirror = Mirror(root, f"http://127.0.0.1:{server.server_address[1]}/", server, seen)
        mirrors.append(mirror)
        return mirror

    yield start
    for mirror in mirrors:
        mirror.stop()
