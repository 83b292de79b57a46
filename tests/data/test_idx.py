"""The IDX reader on the real MNIST files and on every kind of corrupt file we can think of."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from genlab.data import download, load_dataset
from genlab.data.idx import encode_idx, read_idx, write_idx
from genlab.data.sources import read_idx_pair
from genlab.errors import DataError


# --- the real files ----------------------------------------------------------------------------------
def test_shared_mnist_checksums(shared_mnist: Path) -> None:
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"]:
        assert download.md5_of(shared_mnist / name) == download.CHECKSUMS["mnist"][name], name


def test_shared_mnist_contents(shared_mnist: Path) -> None:
    images = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared_mnist / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert sorted(np.unique(labels).tolist()) == list(range(10))
    assert images.max() == 255 and images.min() == 0
    train_labels = read_idx(shared_mnist / "train-labels-idx1-ubyte.gz")
    assert train_labels.shape == (60000,) and train_labels.max() == 9


# --- round trips -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", "<i4", "f4", "f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_every_type_code(tmp_path: Path, dtype: str, suffix: str) -> None:
    array = (np.arange(24) - 5).reshape(2, 3, 4).astype(dtype)
    back = read_idx(write_idx(tmp_path / f"x-idx3{suffix}", array))
    assert back.shape == (2, 3, 4) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "labels-without-gz-suffix"
    path.write_bytes(gzip.compress(encode_idx(np.arange(5, dtype=np.uint8))))
    np.testing.assert_array_equal(read_idx(path), np.arange(5))


# --- corrupt files -----------------------------------------------------------------------------------
def _labels_bytes(n: int = 10) -> bytes:
    return encode_idx(np.arange(n, dtype=np.uint8) % 10)


@pytest.mark.parametrize(
    "magic", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"PK\x03\x04"]
)
def test_bad_magic(tmp_path: Path, magic: bytes) -> None:
    path = tmp_path / "bad-magic"
    path.write_bytes(magic + _labels_bytes()[4:])
    with pytest.raises(DataError, match="bad-magic"):
        read_idx(path)


def test_tiny_and_header_truncated(tmp_path: Path) -> None:
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="only 2 bytes"):
        read_idx(tmp_path / "tiny")
    (tmp_path / "short-header").write_bytes(encode_idx(np.zeros((2, 3, 4), np.uint8))[:10])
    with pytest.raises(DataError, match="header"):
        read_idx(tmp_path / "short-header")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_payload(tmp_path: Path, suffix: str) -> None:
    data = encode_idx(np.zeros((4, 5, 5), np.uint8))[:-7]  # 100 payload bytes expected, 93 present
    path = tmp_path / f"trunc-images-idx3-ubyte{suffix}"
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(DataError, match=r"trunc-images.*truncated.*100 payload bytes, found 93"):
        read_idx(path)


def test_extra_bytes(tmp_path: Path) -> None:
    path = tmp_path / "extra-labels-idx1-ubyte"
    path.write_bytes(_labels_bytes(10) + b"\x00\x01\x02")
    with pytest.raises(DataError, match=r"extra-labels.*oversized.*10 payload bytes, found 13"):
        read_idx(path)


def test_corrupt_gzip_bad_crc(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(_labels_bytes(1000)))
    packed[-8] ^= 0xFF  # the CRC32 in the trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(DataError, match=r"corrupt gzip file .*crc\.gz"):
        read_idx(path)


def test_corrupt_gzip_truncated_stream(tmp_path: Path) -> None:
    packed = gzip.compress(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(path)


def test_corrupt_gzip_garbage_body(tmp_path: Path) -> None:
    path = tmp_path / "garbage.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 64)
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope.gz")


# --- image/label pairs -------------------------------------------------------------------------------
def test_pair_wrong_ndim(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images.gz", np.zeros((3, 4), np.uint8))  # 2-D: not (N, H, W)
    labels = write_idx(tmp_path / "labels.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"images\.gz should hold uint8 images"):
        read_idx_pair(images, labels, 10)
    images = write_idx(tmp_path / "images.gz", np.zeros((3, 4, 4), np.uint8))
    labels = write_idx(tmp_path / "labels.gz", np.zeros((3, 1), np.uint8))
    with pytest.raises(DataError, match=r"labels\.gz should hold integer labels"):
        read_idx_pair(images, labels, 10)


def test_pair_count_mismatch(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images.gz", np.zeros((3, 4, 4), np.uint8))
    labels = write_idx(tmp_path / "labels.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="holds 3 images but .* holds 4 labels"):
        read_idx_pair(images, labels, 10)


def test_pair_label_out_of_range(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images.gz", np.zeros((3, 4, 4), np.uint8))
    labels = write_idx(tmp_path / "labels.gz", np.array([0, 12, 3], np.uint8))
    with pytest.raises(DataError, match=r"labels from 0 to 12, expected 0\.\.9"):
        read_idx_pair(images, labels, 10)


def test_corrupt_file_in_cache_is_reported_by_load_dataset(isolated_data: Path) -> None:
    folder = isolated_data / "mnist"
    folder.mkdir(parents=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(6, np.uint8))
    with pytest.raises(DataError, match="5 images but .* 6 labels"):
        load_dataset("mnist", "test")
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"junk")
    with pytest.raises(DataError, match="corrupt gzip"):
        load_dataset("mnist", "test")
