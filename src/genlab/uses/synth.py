"""Synthetic datasets from a trained run: labeled per class from a conditional model, unlabeled otherwise.

The output forms are the ones `--data` reads: a folder with one subfolder of PNGs per class (loose PNGs
when unlabeled), or an .npz with `images` uint8 (N, H, W, C) and `labels` (N,).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from .images import form_of, to_uint8_nchw


def is_conditional(model) -> bool:
    return bool(getattr(model, "is_conditional", False))


def synthesize(
    run,
    per_class: int | None = None,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(images (N, C, H, W) in [0, 1], labels (N,) or None). A conditional model takes `per_class` and
    returns per_class images of each class in class order; an unconditional one takes `n`."""
    model = run.model
    if is_conditional(model):
        if per_class is None or n is not None:
            raise ConfigError(f"model {model.name!r} is conditional: give --per-class N (images per class)")
        labels = torch.arange(model.config.num_classes).repeat_interleave(per_class)
    else:
        if n is None or per_class is not None:
            raise ConfigError(
                f"model {model.name!r} is unconditional: give --n N (its images have no labels)"
            )
        labels = None
    total = len(labels) if labels is not None else n
    parts = []
    for index, start in enumerate(range(0, total, batch_size)):
        count = min(batch_size, total - start)
        chunk_labels = None if labels is None else labels[start : start + count].to(model.device)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)  # batch-size-independent seeds
        parts.append(model.sample(count, labels=chunk_labels, generator=generator).cpu())
        if progress is not None:
            progress(count)
    images = torch.cat(parts) if parts else torch.zeros(0, *model.config.image_shape)
    return images, labels


def class_names(run) -> list[str]:
    """Folder names "0".."9" (zero-padded past ten classes, so sorted folders keep the label order)."""
    count = run.model.config.num_classes
    return [str(i).zfill(len(str(count - 1))) for i in range(count)]


def write_dataset(
    images: Tensor,
    labels: Tensor | None,
    out: str | Path,
    names: list[str] | None = None,
    record: dict | None = None,
) -> Path:
    """Write a dataset in the form `out` names: `.npz`, or a folder (class subfolders when labeled).
    `record` (genlab.provenance) goes into the .npz and into every PNG, each with its own label."""
    from .. import provenance

    out = Path(out).expanduser()
    data = to_uint8_nchw(images)  # (N, C, H, W)
    form = form_of(out)
    if form == "image":
        raise ConfigError(f"--out {out.name!r} is one image: give a folder or an .npz for a dataset")
    if form == "npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"images": data.transpose(0, 2, 3, 1)}
        if labels is not None:
            arrays["labels"] = labels.numpy().astype(np.int64)
            arrays["class_names"] = np.array(names or [str(i) for i in range(int(labels.max()) + 1)])
        if record:
            arrays["provenance"] = provenance.npz_field(record)
        np.savez_compressed(out, **arrays)
        return out
    from PIL import Image

    for i, image in enumerate(data):
        sub = out if labels is None else out / (names[int(labels[i])] if names else str(int(labels[i])))
        sub.mkdir(parents=True, exist_ok=True)
        info = None
        if record:
            info = provenance.png_info(record if labels is None else {**record, "label": int(labels[i])})
        Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(
            sub / f"{i:05d}.png", pnginfo=info
        )
    return out
