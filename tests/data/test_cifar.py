"""CIFAR-10's binary release: a tiny archive in the same format, served from a local HTTP mirror."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from genlab.data import cifar, download, load_dataset
from genlab.errors import DataError

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH = 3  # records per batch file: 5 train batches -> 15 train images, 3 test images


def _records(rng: np.random.Generator, n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """n CIFAR records; the images are built as (N, 32, 32, 3) pixels and written plane by plane, so the
    reader's (N, 3, 32, 32) layout is checked against an independent transposition."""
    pixels = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    chunks = []
    for label, image in zip(labels, pixels):
        chunks.append(bytes([label]))
        for channel in range(3):  # R, G, B planes, each row-major
            chunks.append(image[:, :, channel].tobytes())
    return b"".join(chunks), pixels.transpose(0, 3, 1, 2), labels.astype(np.int64)


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def make_archive(path: Path, seed: int = 0, corrupt: dict[str, bytes] | None = None) -> dict:
    """A tiny cifar-10-binary.tar.gz at `path`; `corrupt` replaces members' bytes. Returns what it holds."""
    rng = np.random.default_rng(seed)
    expected: dict = {"class_names": NAMES}
    members: dict[str, bytes] = {}
    for split, files in cifar.SPLIT_FILES.items():
        images, labels = [], []
        for f in files:
            members[f], x, y = _records(rng, PER_BATCH)
            images.append(x)
            labels.append(y)
        expected[split] = (np.concatenate(images), np.concatenate(labels))
    members[cifar.META_FILE] = ("\n".join(NAMES) + "\n\n").encode()  # the release ends with blank lines
    members.update(corrupt or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        _add(archive, "cifar-10-batches-bin/readme.html", b"<html></html>")
        for name, data in members.items():
            _add(archive, f"cifar-10-batches-bin/{name}", data)
    return expected


@pytest.fixture
def mirror(serve, monkeypatch: pytest.MonkeyPatch):
    served = serve("cifar")
    served.expected = make_archive(served.root / cifar.ARCHIVE)
    monkeypatch.setitem(
        download.CHECKSUMS, "cifar10", {cifar.ARCHIVE: download.md5_of(served.root / cifar.ARCHIVE)}
    )
    monkeypatch.setitem(download.MIRRORS, "cifar10", [served.url])
    return served


@pytest.mark.parametrize("alias", ["cifar10", "cifar-10"])
def test_download_checksum_and_parse(mirror, isolated_data: Path, alias: str) -> None:
    for split, n in [("train", 5 * PER_BATCH), ("test", PER_BATCH)]:
        ds = load_dataset(alias, split)
        assert ds.name == "cifar10" and len(ds) == n and ds.image_shape == (3, 32, 32)
        assert ds.class_names == NAMES and ds.num_classes == 10
        images, labels = mirror.expected[split]
        np.testing.assert_array_equal(ds.images.numpy(), images)
        np.testing.assert_array_equal(ds.labels.numpy(), labels)
    cached = isolated_data / "cifar10" / cifar.ARCHIVE
    assert download.md5_of(cached) == download.CHECKSUMS["cifar10"][cifar.ARCHIVE]
    assert sorted(p.name for p in cached.parent.iterdir()) == [cifar.ARCHIVE]  # no temp files left
    assert mirror.requests == [f"/{cifar.ARCHIVE}"]  # the second split came from the cache


def test_wrong_checksum_is_not_kept(mirror, monkeypatch, isolated_data: Path) -> None:
    monkeypatch.setitem(download.CHECKSUMS, "cifar10", {cifar.ARCHIVE: "0" * 32})
    with pytest.raises(DataError, match="cannot download cifar10"):
        load_dataset("cifar10", "test")
    assert list((isolated_data / "cifar10").iterdir()) == []


def test_offline_error_names_file_and_folder(mirror, monkeypatch, isolated_data: Path) -> None:
    monkeypatch.setenv("GENLAB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", "train")
    target = isolated_data / "cifar10"
    assert str(err.value) == f"cannot download cifar10 (offline?): put {cifar.ARCHIVE} into {target}/"
    assert mirror.requests == []


def _load_local(isolated_data: Path, **corrupt: bytes) -> None:
    make_archive(isolated_data / "cifar10" / cifar.ARCHIVE, corrupt=corrupt)
    load_dataset("cifar10", "train")


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        ({"data_batch_2.bin": b"\x01" * (cifar.RECORD_BYTES + 7)}, r"data_batch_2\.bin is truncated"),
        ({"test_batch.bin": b""}, r"test_batch\.bin is truncated"),
        (
            {"data_batch_1.bin": b"\x0a" + b"\x00" * 3072},
            r"data_batch_1\.bin is corrupt: record 0 has label 10",
        ),
        ({cifar.META_FILE: b"cat\ndog\n"}, r"lists 2 class names, expected 10"),
    ],
)
def test_corrupt_batches_are_one_line_errors(isolated_data: Path, corrupt, message) -> None:
    with pytest.raises(DataError, match=message) as err:
        _load_local(isolated_data, **corrupt)
    assert "\n" not in str(err.value)


def test_truncated_archive_is_one_line_error(isolated_data: Path) -> None:
    path = isolated_data / "cifar10" / cifar.ARCHIVE
    make_archive(path)
    path.write_bytes(path.read_bytes()[:-200])  # cut off the end of the gzip stream
    with pytest.raises(DataError, match=r"corrupt CIFAR-10 archive .*: delete it and fetch it again") as err:
        load_dataset("cifar10", "test")
    assert "\n" not in str(err.value)


def test_missing_member_and_links_are_refused(isolated_data: Path, tmp_path: Path) -> None:
    path = isolated_data / "cifar10" / cifar.ARCHIVE
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w:gz") as archive:
        link = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    with pytest.raises(DataError, match="data_batch_1.bin is not a regular file"):
        load_dataset("cifar10", "train")
    with tarfile.open(path, "w:gz") as archive:
        _add(archive, "../escape/test_batch.bin", b"\x00" * cifar.RECORD_BYTES)  # wrong path: ignored
    with pytest.raises(DataError, match=r"lacks cifar-10-batches-bin/batches\.meta\.txt, .*test_batch\.bin"):
        load_dataset("cifar10", "test")
    assert not (tmp_path / "escape").exists() and not (isolated_data / "escape").exists()
