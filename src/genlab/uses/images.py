"""Reading and writing the three forms the uses take: one image file, a folder of images, an .npz.

Images travel as float (N, C, H, W) in [0, 1] together with an `ImageSet` that remembers the form and
the relative file names, so a command can write its output in the form its input had.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass
class ImageSet:
    images: torch.Tensor  # float (N, C, H, W) in [0, 1]
    form: str  # "image" | "folder" | "npz"
    names: list[str] = field(default_factory=list)  # relative paths (folder form), else empty
    labels: torch.Tensor | None = None  # int64 (N,) from an .npz, passed through
    class_names: list[str] | None = None


def form_of(path: Path) -> str:
    """The form an output path asks for, from its name: .npz, an image extension, else a folder."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return "folder"


def _read_image_file(path: Path) -> np.ndarray:
    """One image as uint8 (C, H, W): C = 1 for grayscale modes, else 3 (RGB; alpha dropped); 16-bit
    grayscale is scaled to 8 bits, not clipped."""
    from ..data.sources import to_uint8

    try:
        with Image.open(path) as im:
            mode = "L" if im.mode in _GRAY_MODES else "RGB"
            array = to_uint8(im, mode)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _image_files(folder: Path) -> list[Path]:
    files = (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(p for p in files if not any(s.startswith(".") for s in p.relative_to(folder).parts))


def read_images(path: str | Path) -> ImageSet:
    """An image file, a folder of images (searched recursively) or an .npz with `images` (and labels)."""
    from ..data.sources import read_npz

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist: give an image file, a folder of images or an .npz")
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise DataError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        arrays = [_read_image_file(f) for f in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DataError(f"the images in {path} differ in size or channels: {sorted(shapes)}")
        names = [str(f.relative_to(path)) for f in files]
        return ImageSet(_to_float(np.stack(arrays)), "folder", names)
    if path.suffix.lower() == ".npz":
        images, labels, class_names = read_npz(path)
        return ImageSet(
            _to_float(images), "npz", [], None if labels is None else torch.from_numpy(labels), class_names
        )
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageSet(_to_float(_read_image_file(path)[None]), "image", [path.name])
    raise DataError(f"{path} is not an image ({', '.join(IMAGE_EXTENSIONS)}), a folder or an .npz")


def _to_float(images_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(images_uint8, copy=True)).float() / 255.0


def check_shape(images: torch.Tensor, expected: tuple[int, ...], source: str) -> None:
    """One line naming what differs when images do not fit the model (size or channels)."""
    got = tuple(images.shape[1:])
    if got == tuple(expected):
        return
    c, h, w = expected
    if got[0] != c:
        raise DataError(
            f"{source} has {got[0]}-channel images but the model takes {c} channel(s) ({w}x{h}): "
            f"convert them ({'grayscale' if c == 1 else 'RGB'})"
        )
    raise DataError(f"{source} has {got[2]}x{got[1]} images but the model takes {w}x{h}: resize them first")


def to_uint8_nchw(images: torch.Tensor) -> np.ndarray:
    return (images.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def _save_png(image_chw: np.ndarray, path: Path, record: dict | None = None) -> None:
    from .. import provenance

    path.parent.mkdir(parents=True, exist_ok=True)
    array = image_chw[0] if image_chw.shape[0] == 1 else image_chw.transpose(1, 2, 0)
    Image.fromarray(array).save(path, pnginfo=provenance.png_info(record) if record else None)


def write_images(
    images: torch.Tensor, out: str | Path, like: ImageSet | None = None, record: dict | None = None
) -> Path:
    """Write float images in the form `out` names: .npz (uint8 (N, H, W, C), labels passed through), one
    image file (N must be 1), or a folder of PNGs keeping the input's relative names where it had them.
    `record` (genlab.provenance) goes into every PNG and the .npz."""
    from .. import provenance

    out = Path(out).expanduser()
    data = to_uint8_nchw(images)  # (N, C, H, W)
    form = form_of(out)
    if form == "npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"images": data.transpose(0, 2, 3, 1)}
        if like is not None and like.labels is not None:
            arrays["labels"] = like.labels.numpy()
            if like.class_names is not None:
                arrays["class_names"] = np.array(like.class_names)
        if record:
            arrays["provenance"] = provenance.npz_field(record)
        np.savez_compressed(out, **arrays)
    elif form == "image":
        if len(data) != 1:
            raise DataError(
                f"{out} is one image file but there are {len(data)} images: give a folder or .npz"
            )
        _save_png(data[0], out, record) if out.suffix.lower() == ".png" else _save_any(data[0], out)
    else:
        names = like.names if like is not None and len(like.names) == len(data) else []
        names = [str(Path(n).with_suffix(".png")) for n in names] or [
            f"{i:05d}.png" for i in range(len(data))
        ]
        for image, name in zip(data, names):
            _save_png(image, out / name, record)
    return out


def _save_any(image_chw: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image_chw[0] if image_chw.shape[0] == 1 else image_chw.transpose(1, 2, 0)
    try:
        Image.fromarray(array).save(path)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot write {path}: {exc}") from exc
