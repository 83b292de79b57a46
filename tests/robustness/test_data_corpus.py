"""Corpus: datasets that parse but cannot be used (too small, empty, 10^9 classes, damaged files), given
to every command that reads data; plus the data fixes that are no error (relative paths, 16-bit PNGs)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genlab.cli import main

from .corpus import case, check_case, params, write_file

TRAIN = "train --model ae --epochs 1 --batch-size 4 --out {tmp}/run --data"


def npz(name: str, **arrays: np.ndarray):
    """Setup: {tmp}/NAME holding these arrays."""

    def setup(tmp: Path, places: dict[str, Path]) -> None:
        np.savez(tmp / name, **arrays)

    return setup


def pngs(folder: str, sizes: list[tuple[int, int]], subfolders: tuple[str, ...] = ("",), garbage=False):
    """Setup: PNG files of these (width, height) in {tmp}/FOLDER[/SUB]; garbage: bytes that are no PNG."""

    def setup(tmp: Path, places: dict[str, Path]) -> None:
        for sub in subfolders:
            target = tmp / folder / sub
            target.mkdir(parents=True, exist_ok=True)
            for i, (w, h) in enumerate(sizes):
                if garbage:
                    (target / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
                else:
                    Image.fromarray(np.zeros((h, w), np.uint8)).save(target / f"{i}.png")

    return setup


def both(*setups):
    def setup(tmp: Path, places: dict[str, Path]) -> None:
        for step in setups:
            step(tmp, places)

    return setup


def truncated_npz(tmp: Path, places: dict[str, Path]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, images=np.zeros((8, 8, 8), np.uint8))
    (tmp / "cut.npz").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def npy_named_npz(tmp: Path, places: dict[str, Path]) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((8, 8, 8), np.uint8))
    (tmp / "single.npz").write_bytes(buffer.getvalue())


def zip_without_arrays(tmp: Path, places: dict[str, Path]) -> None:
    with zipfile.ZipFile(tmp / "other.npz", "w") as archive:
        archive.writestr("readme.txt", "hello")


IMAGES = np.zeros((8, 8, 8), np.uint8)  # 8 blank 8x8 images: a valid shape
BAD_NPZ = [  # (id, arrays, expected message): each given to `genlab train --data`
    ("2x2", {"images": np.zeros((16, 2, 2), np.uint8)}, "are 2x2 pixels: genlab needs at least 4x4"),
    ("0x0", {"images": np.zeros((16, 0, 0), np.uint8)}, "are 0x0 pixels"),
    ("0x0-float", {"images": np.zeros((16, 0, 0), np.float32)}, "are 0x0 pixels"),
    ("1x100", {"images": np.zeros((16, 1, 100), np.uint8)}, "are 1x100 pixels"),
    ("billion-classes", {"images": IMAGES, "labels": np.array([0] * 7 + [10**9])}, "at most 100000 classes"),
    ("negative-label", {"images": IMAGES, "labels": np.array([0] * 7 + [-1])}, "include -1"),
    ("float-labels", {"images": IMAGES, "labels": np.full(8, 0.5)}, "must be integers"),
    ("label-count", {"images": IMAGES, "labels": np.zeros(3, int)}, "has 8 images but 3 labels"),
    ("labels-2d", {"images": IMAGES, "labels": np.zeros((8, 2), int)}, "must be integers of shape (N,)"),
    (
        "few-names",
        {"images": IMAGES, "labels": np.arange(8), "class_names": np.array(["a"])},
        "or more strings",
    ),
    ("no-images", {"pixels": IMAGES}, "no 'images' array (it holds pixels)"),
    ("empty", {"images": np.zeros((0, 8, 8), np.uint8)}, "is empty"),
    ("int64", {"images": IMAGES.astype(np.int64)}, "are int64: expected uint8"),
    ("nan", {"images": np.full((8, 8, 8), np.nan)}, "contains NaN or inf"),
    ("out-of-range", {"images": np.full((8, 8, 8), 2.0)}, "range from 2 to 2"),
    ("flat", {"images": np.zeros((8, 64), np.uint8)}, "has shape (8, 64)"),
    ("two-channels", {"images": np.zeros((8, 8, 8, 2), np.uint8)}, "C 1 or 3"),
    ("one-image", {"images": np.zeros((1, 8, 8), np.uint8)}, "at least 2 are needed"),
    ("object", {"images": np.array([None] * 8)}, "cannot read"),
]

DATA_CASES = [
    case(
        f"npz-{id}",
        f"{TRAIN} {{tmp}}/bad.npz",
        message,
        npz("bad.npz", **arrays),
        absent="{tmp}/run/config.json",
    )
    for id, arrays, message in BAD_NPZ
] + [
    case("npz-truncated", f"{TRAIN} {{tmp}}/cut.npz", "cannot read", truncated_npz),
    case("npz-is-npy", f"{TRAIN} {{tmp}}/single.npz", "single .npy array", npy_named_npz),
    case("npz-zip-of-text", f"{TRAIN} {{tmp}}/other.npz", "no 'images' array", zip_without_arrays),
    case("npz-garbage", f"{TRAIN} {{tmp}}/g.npz", "cannot read", write_file("g.npz", b"PK\x03\x04 broken")),
    case("data-missing", f"{TRAIN} {{tmp}}/none.npz", "unknown dataset"),
    case(
        "data-text-file",
        f"{TRAIN} {{tmp}}/a.txt",
        "neither a folder of images nor an .npz",
        write_file("a.txt", "x"),
    ),
    case("data-unknown-name", f"{TRAIN} imagenet", "unknown dataset 'imagenet'"),
    case("folder-empty", f"{TRAIN} {{tmp}}/empty", "holds no images", pngs("empty", [])),
    case(
        "folder-garbage-png", f"{TRAIN} {{tmp}}/f", "cannot read image", pngs("f", [(8, 8)] * 3, garbage=True)
    ),
    case(
        "folder-sizes",
        f"{TRAIN} {{tmp}}/f",
        "all images must have the same size",
        pngs("f", [(8, 8), (9, 8)]),
    ),
    case("folder-2x2", f"{TRAIN} {{tmp}}/f", "are 2x2 pixels", pngs("f", [(2, 2)] * 4)),
    case(
        "folder-loose-and-classes",
        f"{TRAIN} {{tmp}}/f",
        "both class subfolders and loose images",
        both(pngs("f", [(8, 8)] * 2), pngs("f", [(8, 8)] * 2, ("a", "b"))),
    ),
    # other commands that read data
    case(
        "reconstruct-2x2",
        "reconstruct {ae} --data {tmp}/bad.npz --out {tmp}/r.png",
        "2x2 pixels",
        npz("bad.npz", images=np.zeros((16, 2, 2), np.uint8)),
    ),
    case(
        "reconstruct-other-shape",
        "reconstruct {ae} --data {tmp}/s.npz --out {tmp}/r.png",
        "but the model takes (1, 28, 28)",
        npz("s.npz", images=IMAGES),
    ),
    case(
        "interpolate-0x0",
        "interpolate {ae} --data {tmp}/bad.npz --out {tmp}/i.png",
        "0x0 pixels",
        npz("bad.npz", images=np.zeros((16, 0, 0), np.uint8)),
    ),
    case(
        "denoise-2x2",
        "denoise {ae} --in {tmp}/bad.npz --out {tmp}/d.npz",
        "2x2 pixels",
        npz("bad.npz", images=np.zeros((16, 2, 2), np.uint8)),
    ),
    case(
        "denoise-classes",
        "denoise {ae} --in {tmp}/bad.npz --out {tmp}/d.npz",
        "at most 100000 classes",
        npz("bad.npz", images=IMAGES, labels=np.array([0] * 7 + [10**9])),
    ),
    case(
        "compress-garbage-png",
        "compress {ae} --in {tmp}/x.png --out {tmp}/c.glz",
        "x.png",
        write_file("x.png", b"\x89PNG nothing"),
    ),
    case(
        "train-classifier-2x2",
        "train-classifier --data {tmp}/bad.npz",
        "2x2 pixels",
        npz("bad.npz", images=np.zeros((16, 2, 2), np.uint8), labels=np.arange(16) % 2),
    ),
]


@pytest.mark.parametrize("c", params(DATA_CASES))
def test_bad_data_is_one_line_exit_2(c, tmp_path, capsys, places):
    check_case(c, tmp_path, capsys, places)


def test_relative_data_path_is_stored_absolute(tmp_path, places, monkeypatch, capsys):
    """A run trained on `--data digits.npz` works from any folder: config.json holds the absolute path."""
    from tests.conftest import TINY_MODEL_ARGS

    here = tmp_path / "here"
    here.mkdir()
    (here / "digits.npz").write_bytes(places["digits"].read_bytes())
    monkeypatch.chdir(here)
    tiny = [
        f"model.{k}={list(v) if isinstance(v, tuple) else v}".replace(" ", "")
        for k, v in TINY_MODEL_ARGS["ae"].items()
    ]
    settings = [arg for pair in tiny for arg in ("--set", pair)]
    assert (
        main(["train", "--model", "ae", "--data", "digits.npz", "--epochs", "1", "--out", "run", *settings])
        == 0
    )
    saved = json.loads((here / "run" / "config.json").read_text())
    assert saved["train"]["data"] == str(here / "digits.npz")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["reconstruct", str(here / "run"), "--out", str(tmp_path / "r.png")]) == 0, (
        capsys.readouterr().err
    )


def test_sixteen_bit_grayscale_pngs_are_scaled_not_clipped(tmp_path):
    from genlab.data import load_dataset
    from genlab.uses.images import read_images

    levels = np.arange(4 * 8 * 8).reshape(4, 8, 8) % 256  # the 8-bit values we expect back
    for i, level in enumerate(levels):
        Image.fromarray((level * 257).astype(np.uint16)).save(tmp_path / f"{i}.png")  # 0..65535
    assert Image.open(tmp_path / "0.png").mode.startswith("I")
    dataset = load_dataset(str(tmp_path), "train")
    assert dataset.image_shape == (1, 8, 8)
    every = np.concatenate([load_dataset(str(tmp_path), s).images.numpy() for s in ("train", "test")])
    assert sorted(every.reshape(4, -1).tolist()) == sorted(levels.reshape(4, -1).tolist())
    read = read_images(tmp_path / "1.png").images  # the uses (denoise, compress) read it the same way
    assert np.array_equal(np.rint(read[0, 0].numpy() * 255), levels[1])
