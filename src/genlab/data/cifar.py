"""Reader of CIFAR-10's *binary* release (`cifar-10-binary.tar.gz`): plain bytes, never pickles.

Each batch file is a run of 3073-byte records: one label byte, then 32x32 red, 32x32 green and 32x32 blue
bytes, each plane row-major. Members are read straight out of the archive into memory by their exact
expected names, so nothing is ever extracted to a path the archive chose (no path traversal), and links
or other non-regular members are refused. Every check raises `DataError` naming the file, so a truncated
or corrupt archive is one line telling the user to delete it and fetch it again.
"""

from __future__ import annotations

import functools
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
META_FILE = "batches.meta.txt"
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32  # label byte + R, G, B planes


def parse_batch(data: bytes, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and int64 labels (N,) from the bytes of one batch file."""
    if len(data) == 0 or len(data) % RECORD_BYTES:
        raise DataError(
            f"{source} is truncated or not a CIFAR-10 batch: {len(data)} bytes is not a whole number "
            f"of {RECORD_BYTES}-byte records"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(
            f"{source} is corrupt: record {bad} has label {labels[bad]}, expected 0..{NUM_CLASSES - 1}"
        )
    images = records[:, 1:].reshape(-1, *IMAGE_SHAPE).copy()  # copy: frombuffer arrays are read-only
    return images, labels


def parse_class_names(data: bytes, source: str = "<bytes>") -> list[str]:
    """The class names of `batches.meta.txt`: one per line, blank lines ignored."""
    try:
        names = [line.strip() for line in data.decode("ascii").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{source} is corrupt: class names are not ASCII text ({exc.reason})") from exc
    if len(names) != NUM_CLASSES:
        raise DataError(f"{source} is corrupt: it lists {len(names)} class names, expected {NUM_CLASSES}")
    return names


def _wanted_members(path: Path) -> dict[str, bytes]:
    """The bytes of every member we need, in one sequential pass (stream mode: a gzip archive is never
    inflated twice), by exact name; nothing is written to disk."""
    wanted = {f"{FOLDER}/{f}" for files in SPLIT_FILES.values() for f in files} | {f"{FOLDER}/{META_FILE}"}
    found: dict[str, bytes] = {}
    with tarfile.open(path, "r|*") as archive:
        for member in archive:
            if member.name not in wanted:
                continue
            if not member.isfile():  # a link or device could point anywhere; a real release has none
                raise DataError(
                    f"{path}: {member.name} is not a regular file; delete the archive and fetch it again"
                )
            handle = archive.extractfile(member)
            assert handle is not None  # regular files always have a data stream
            found[member.name] = handle.read()
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}: delete it and fetch it again")
    return found


def read_archive(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray] | list[str]]:
    """Both splits and the class names of a CIFAR-10 binary archive (gzip or plain tar):
    {'train': (images, labels), 'test': (images, labels), 'class_names': [...]}."""
    return _read_archive_cached(Path(path).resolve(), Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _read_archive_cached(path: Path, mtime_ns: int) -> dict:
    # Cached on (path, mtime) because the whole gzip stream must be inflated to reach any member:
    # loading 'train' then 'test' in one process then costs one pass, and a replaced file is re-read.
    try:
        members = _wanted_members(path)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        # A cut-off gzip stream is an EOFError, a bad deflate block a zlib.error, a bad header a TarError.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"corrupt CIFAR-10 archive {path} ({reason}): delete it and fetch it again") from exc
    out: dict = {}
    for split, files in SPLIT_FILES.items():
        parts = [parse_batch(members[f"{FOLDER}/{f}"], f"{path}:{f}") for f in files]
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    out["class_names"] = parse_class_names(members[f"{FOLDER}/{META_FILE}"], f"{path}:{META_FILE}")
    return out
