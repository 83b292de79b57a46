"""Reader (and a small writer, for tests and tools) of the IDX format MNIST-style datasets ship in.

Every check raises `DataError` naming the file, so a truncated download or a corrupt archive is reported
as something the user can fix (delete and re-fetch) rather than as a numpy/gzip traceback.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# IDX type code -> big-endian numpy dtype of the payload.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Whole file contents, gunzipped when it is a gzip stream (detected by magic, not by extension)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # BadGzipFile is an OSError; a cut-off stream is an EOFError; a bad deflate block a zlib.error.
        raise DataError(f"corrupt gzip file {path} ({exc}): delete it and fetch it again") from exc


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an uncompressed IDX buffer into a native-endian array; `source` names it in errors."""
    if len(data) < 4:
        raise DataError(f"{source} is not an IDX file: only {len(data)} bytes")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES:
        raise DataError(f"{source} is not an IDX file: bad magic number 0x{data[:4].hex()}")
    if ndim == 0:
        raise DataError(f"{source} is not a valid IDX file: it declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{source} is truncated: {len(data)} bytes, but its header alone needs {header_len}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        kind = "truncated" if actual < expected else "oversized"
        raise DataError(
            f"{source} is {kind}: shape {dims} needs {expected} payload bytes, found {actual}; "
            "delete it and fetch it again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)  # native order, writable, owns its memory


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a numpy array of the shape its header declares."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for `array` (its dtype must be one IDX knows); the inverse of `parse_idx`."""
    array = np.asarray(array)
    for code, dtype in IDX_DTYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
            return header + array.astype(dtype, copy=False).tobytes()
    raise ValueError(f"IDX has no type code for dtype {array.dtype}")


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` as IDX, gzip-compressed when the name ends in .gz; returns the path."""
    path = Path(path)
    data = encode_idx(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)  # mtime=0: identical bytes (and MD5) on every write
    path.write_bytes(data)
    return path
