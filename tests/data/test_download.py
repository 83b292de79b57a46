"""Downloads from a local HTTP mirror: checksums, atomic writes, mirror fallback, cache hits, offline."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from genlab.data import data_dir, download, load_dataset
from genlab.data.idx import read_idx, write_idx
from genlab.errors import DataError

TRAIN = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
TEST = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def _make_idx_files(folder: Path, seed: int = 0) -> dict[str, str]:
    """Small MNIST-like IDX gz files in `folder` (20 train, 8 test images of 6x6); returns their MD5s."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in [("train", 20), ("t10k", 8)]:
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 6, 6), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return {f: download.md5_of(folder / f) for f in TRAIN + TEST}


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there once the socket is closed


@pytest.fixture
def good(serve, monkeypatch: pytest.MonkeyPatch):
    """A mirror holding valid files, with CHECKSUMS pointing at them and MIRRORS at it alone."""
    mirror = serve("good")
    sums = _make_idx_files(mirror.root)
    monkeypatch.setitem(download.CHECKSUMS, "mnist", sums)
    monkeypatch.setitem(download.MIRRORS, "mnist", [mirror.url])
    return mirror


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part")


def test_data_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "x"))
    assert data_dir() == tmp_path / "x"
    monkeypatch.delenv("GENLAB_DATA")
    assert data_dir() == Path.home() / ".cache" / "genlab"


def test_download_verifies_and_writes_atomically(good, isolated_data: Path) -> None:
    ds = load_dataset("mnist", "train")
    assert len(ds) == 20 and ds.image_shape == (1, 6, 6) and ds.num_classes == 10
    target = isolated_data / "mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(TRAIN)  # only what the split needs
    assert _leftovers(target) == []
    for f in TRAIN:
        assert (target / f).read_bytes() == (good.root / f).read_bytes()
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), read_idx(good.root / TRAIN[0]))


def test_bad_checksum_falls_through_to_next_mirror(serve, good, monkeypatch, isolated_data: Path) -> None:
    bad = serve("bad")
    _make_idx_files(bad.root, seed=1)  # valid IDX, but not the files the checksums describe
    missing = serve("empty")  # answers 404
    monkeypatch.setitem(download.MIRRORS, "mnist", [missing.url, bad.url, good.url])
    ds = load_dataset("mnist", "test")
    assert len(ds) == 8
    assert bad.requests and good.requests and missing.requests
    target = isolated_data / "mnist"
    assert download.md5_of(target / TEST[0]) == download.CHECKSUMS["mnist"][TEST[0]]
    assert _leftovers(target) == []


def test_second_load_hits_cache(good, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_dataset("mnist", "train")
    good.stop()
    monkeypatch.setenv("GENLAB_OFFLINE", "1")
    second = load_dataset("mnist", "train")
    assert len(good.requests) == 2  # one per file, none for the second load
    assert first.images.equal(second.images) and first.labels.equal(second.labels)


def test_all_mirrors_down_is_one_clear_line(monkeypatch, isolated_data: Path) -> None:
    monkeypatch.setitem(download.MIRRORS, "mnist", [_closed_port_url(), _closed_port_url()])
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "train")
    message = str(err.value)
    target = isolated_data / "mnist"
    assert message == f"cannot download mnist (offline?): put {', '.join(TRAIN)} into {target}/"
    assert "\n" not in message
    assert list(target.iterdir()) == []  # no partial or temp files


def test_all_mirrors_wrong_checksum(serve, monkeypatch, isolated_data: Path) -> None:
    bad = serve("bad")
    _make_idx_files(bad.root, seed=1)
    monkeypatch.setitem(download.CHECKSUMS, "mnist", {f: "0" * 32 for f in TRAIN + TEST})
    monkeypatch.setitem(download.MIRRORS, "mnist", [bad.url])
    with pytest.raises(DataError, match=r"cannot download mnist \(offline\?\): put t10k-images"):
        load_dataset("mnist", "test")
    assert list((isolated_data / "mnist").iterdir()) == []


def test_offline_env_fails_fast_without_requests(good, monkeypatch, isolated_data: Path) -> None:
    monkeypatch.setenv("GENLAB_OFFLINE", "1")
    with pytest.raises(DataError, match=f"put {TEST[0]}, {TEST[1]} into {isolated_data / 'mnist'}"):
        load_dataset("mnist", "test")
    assert good.requests == []


def test_only_missing_files_are_downloaded(good, isolated_data: Path) -> None:
    (isolated_data / "mnist").mkdir(parents=True)
    (isolated_data / "mnist" / TEST[1]).write_bytes((good.root / TEST[1]).read_bytes())
    assert len(load_dataset("mnist", "test")) == 8
    assert good.requests == [f"/{TEST[0]}"]


def test_system_dir_and_uncompressed_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "usr-share-datasets"
    _make_idx_files(system / "fashion-mnist")
    for f in TEST:  # store the test files uncompressed, the way some packagers ship them
        gz = system / "fashion-mnist" / f
        write_idx(gz.with_suffix(""), read_idx(gz))
        gz.unlink()
    monkeypatch.setattr(download, "SYSTEM_DIRS", [system])
    monkeypatch.setenv("GENLAB_OFFLINE", "1")
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 8 and ds.class_names[0] == "T-shirt/top" and ds.class_names[-1] == "Ankle boot"
    assert len(load_dataset("fashion-mnist", "train")) == 20


def test_cache_dir_wins_over_system_dir(tmp_path: Path, monkeypatch, isolated_data: Path) -> None:
    _make_idx_files(tmp_path / "sys" / "mnist", seed=1)
    _make_idx_files(isolated_data / "mnist", seed=2)
    monkeypatch.setattr(download, "SYSTEM_DIRS", [tmp_path / "sys"])
    expected = read_idx(isolated_data / "mnist" / TEST[0])
    np.testing.assert_array_equal(load_dataset("mnist", "test").images[:, 0].numpy(), expected)


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN / TEST[0]).is_file(), reason="Debian's dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "SYSTEM_DIRS", [DEBIAN.parent])
    monkeypatch.setenv("GENLAB_OFFLINE", "1")
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 10000 and ds.image_shape == (1, 28, 28)
    assert ds.labels.bincount().tolist() == [1000] * 10
