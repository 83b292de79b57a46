"""Fuzzing the file readers with hypothesis: random bytes and mutations (byte flips, truncations,
insertions) of valid files give either a correct result or a GenlabError, never another exception.

Each property runs EXAMPLES examples (deadline off: the first call of a reader can be slow on a busy
machine); hypothesis shrinks any failure to a minimal input, and `derandomize` keeps CI reproducible.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from genlab.errors import GenlabError

EXAMPLES = 200
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """A valid file with a few bytes flipped, cut short, spliced in or dropped."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


def either(original: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=256), mutated(original))


# --- IDX -------------------------------------------------------------------------------------------------
def _valid_idx() -> bytes:
    from genlab.data.idx import encode_idx

    return encode_idx(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))


@FUZZ
@given(data=either(_valid_idx()), gz=st.booleans())
def test_idx_parser(tmp_path_factory, data, gz):
    from genlab.data.idx import read_idx

    path = tmp_path_factory.mktemp("idx") / "x.idx"
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    try:
        array = read_idx(path)
    except GenlabError:
        return
    assert isinstance(array, np.ndarray) and array.flags.writeable
    if data == _valid_idx():
        assert np.array_equal(array, np.arange(24).reshape(2, 3, 4))


@FUZZ
@given(data=mutated(gzip.compress(_valid_idx(), mtime=0)))
def test_idx_parser_damaged_gzip(tmp_path_factory, data):
    from genlab.data.idx import read_idx

    path = tmp_path_factory.mktemp("idxgz") / "x.idx.gz"
    path.write_bytes(data)
    try:
        read_idx(path)
    except GenlabError:
        pass


# --- .npz --------------------------------------------------------------------------------------------------
def _valid_npz(compressed: bool) -> bytes:
    buffer = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buffer, images=np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4), labels=np.array([0, 1, 1]))
    return buffer.getvalue()


@FUZZ
@given(data=st.one_of(either(_valid_npz(False)), mutated(_valid_npz(True))))
def test_npz_loader(tmp_path_factory, data):
    from genlab.data.sources import read_npz

    path = tmp_path_factory.mktemp("npz") / "x.npz"
    path.write_bytes(data)
    try:
        images, labels, names = read_npz(path)
    except GenlabError:
        return
    assert images.dtype == np.uint8 and images.ndim == 4
    assert labels is None or (len(labels) == len(images) and len(names) > int(labels.max()))


@FUZZ
@given(
    arrays=st.dictionaries(
        st.sampled_from(["images", "labels", "class_names", "other"]),
        st.one_of(
            st.builds(
                lambda shape, dtype: np.zeros(shape, dtype=dtype),
                st.lists(st.integers(0, 5), max_size=5).map(tuple),
                st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_, np.int8, "U3"]),
            ),
            st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6).map(np.array),
            st.lists(st.integers(-(2**40), 2**40), max_size=6).map(lambda v: np.array(v, dtype=np.int64)),
        ),
    )
)
def test_npz_loader_with_odd_arrays(tmp_path_factory, arrays):
    """Well-formed archives with arrays of any shape and type: loaded, or refused with a clear error."""
    from genlab.data.sources import read_npz

    path = tmp_path_factory.mktemp("npz") / "x.npz"
    np.savez(path, **arrays)
    try:
        images, labels, names = read_npz(path)
    except GenlabError:
        return
    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[1] in (1, 3)


# --- image folders ---------------------------------------------------------------------------------------
def _png(mode: str = "L", size=(4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


@FUZZ
@given(
    files=st.lists(
        st.tuples(
            st.sampled_from(["a.png", "b.jpg", "c.bmp", "cls/d.png", "cls2/e.png"]),
            st.one_of(mutated(_png()), mutated(_png("RGB")), mutated(_jpeg()), st.binary(max_size=64)),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_image_folder_loader(tmp_path_factory, files):
    from genlab.data.sources import read_image_folder

    folder = tmp_path_factory.mktemp("images")
    for name, data in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    try:
        images, labels, names = read_image_folder(folder)
    except GenlabError:
        return
    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[1] in (1, 3)


# --- config files and a run's config.json ---------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(-1e3, 1e3) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
SETTING_KEYS = ["model", "preset", "epochs", "batch_size", "seed", "lr", "model_args", "latent_dim", "device"]


@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.dictionaries(st.sampled_from(SETTING_KEYS), json_values, max_size=5).map(json.dumps),
    ),
    suffix=st.sampled_from([".json", ".yaml"]),
)
def test_config_file_loader(tmp_path_factory, text, suffix):
    from genlab.config import load_config_file
    from genlab.runs import resolve_config

    path = tmp_path_factory.mktemp("config") / f"settings{suffix}"
    path.write_text(text)
    try:
        resolve_config(load_config_file(path))
    except GenlabError:
        pass


@st.composite
def damaged_run_config(draw, original: dict) -> dict:
    """config.json with a few fields replaced by arbitrary JSON (model settings within +-1000, so a
    layer of a billion units cannot exhaust memory)."""
    config = json.loads(json.dumps(original))
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(["top", "model_config", "train", "data"]))
        target = config if section == "top" else config.get(section)
        if not isinstance(target, dict):
            config[section] = draw(json_values)
            continue
        key = draw(st.sampled_from(sorted(target) + ["bogus"]))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
    return config


@pytest.fixture(scope="module")
def fuzz_run(tiny_runs, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("fuzz-run") / "vae"
    shutil.copytree(tiny_runs["vae"], run)
    return run


@FUZZ
@given(data=st.data())
def test_run_config_loader(fuzz_run, data):
    import genlab

    original = (
        json.loads((fuzz_run / "config.json.orig").read_text())
        if (fuzz_run / "config.json.orig").is_file()
        else json.loads((fuzz_run / "config.json").read_text())
    )
    (fuzz_run / "config.json.orig").write_text(json.dumps(original))
    as_text = data.draw(st.booleans())
    if as_text:
        content = data.draw(mutated(json.dumps(original).encode()))
    else:
        content = json.dumps(data.draw(damaged_run_config(original))).encode()
    (fuzz_run / "config.json").write_bytes(content)
    try:
        run = genlab.load(fuzz_run)
    except GenlabError as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("loaded")
    assert run.info()["model"] == run.config.model


# --- the .glz compressed format ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def glz(tiny_runs):
    """The tiny autoencoder run and a valid .glz file of three of its inputs."""
    pytest.importorskip("constriction")
    import torch

    import genlab
    from genlab.uses.codec import compress

    run = genlab.load(tiny_runs["ae"])
    images = torch.rand(3, *run.model.config.image_shape, generator=torch.Generator().manual_seed(0))
    return run, compress(run, images, bits=4, names=["a.png", "b.png", "c.png"]).to_bytes()


def _with_crc(body: bytes) -> bytes:
    """A body whose checksum is made valid again, so the mutation reaches the parser behind it."""
    return body + zlib.crc32(body).to_bytes(4, "little")


@FUZZ
@given(data=st.data())
def test_glz_format(glz, data):
    from genlab.uses.codec import Compressed, decompress

    run, valid = glz
    kind = data.draw(st.sampled_from(["random", "mutated", "mutated, checksum fixed", "header fields"]))
    if kind == "header fields":  # a well-formed file whose count, bits or stream is wrong
        compressed = Compressed.from_bytes(valid)
        compressed.header["n"] = data.draw(st.sampled_from([0, 1, 2, 4, 64, 65, 2**16, 2**31, 2**32 - 1]))
        compressed.header["bits"] = data.draw(st.integers(1, 8) | st.integers(0, 255))
        compressed.payload = data.draw(st.one_of(st.just(compressed.payload), mutated(compressed.payload)))
        blob = compressed.to_bytes()
    elif kind == "random":
        blob = data.draw(st.binary(max_size=256))
    elif kind == "mutated":
        blob = data.draw(mutated(valid))
    else:
        blob = _with_crc(data.draw(mutated(valid[:-4])))
    try:
        images = decompress(run, Compressed.from_bytes(blob, "fuzzed.glz"), "fuzzed.glz")
    except GenlabError as exc:
        event(f"{kind}: refused: {str(exc).split(':')[0][:40]}")
        return
    event(f"{kind}: decoded")
    assert images.shape[1:] == tuple(run.model.config.image_shape)
    assert bool(((images >= 0) & (images <= 1)).all())


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(count=st.integers(1, 130), bits=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_glz_round_trip(glz, count, bits, seed):
    """Valid files always decode: the count guard never refuses a real stream (even at 1 bit)."""
    import torch

    from genlab.uses.codec import Compressed, compress, decompress

    run = glz[0]
    images = torch.rand(count, *run.model.config.image_shape, generator=torch.Generator().manual_seed(seed))
    blob = compress(run, images, bits=bits).to_bytes()
    assert decompress(run, Compressed.from_bytes(blob)).shape == images.shape
