"""Finding the files (IDX, CIFAR-10 tarball) of the built-in datasets on disk, and downloading the missing ones.

Lookup order per file: `data_dir()/<name>/`, then the system dirs (Debian's `dataset-fashion-mnist`
installs into /usr/share/datasets/fashion-mnist/), then each mirror in turn. Downloads stream into a temp
file next to the target, are MD5-checked and only then renamed into place, so an interrupted or corrupt
download never leaves a file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from ..errors import DataError

log = logging.getLogger(__name__)

# Module-level so tests (and users behind a proxy mirror) can point them elsewhere.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
    "cifar10": [
        "https://www.cs.toronto.edu/~kriz/",
    ],
}
# MD5 of the upstream files. Files found locally are not held to these (Debian re-compresses them);
# they are validated structurally by the IDX reader instead.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {
        "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",  # the binary release, not pickles
    },
}
SYSTEM_DIRS: list[Path] = [Path("/usr/share/datasets")]
TIMEOUT_S = 30.0
_CHUNK = 1 << 20


def data_dir() -> Path:
    """Where datasets are cached: $GENLAB_DATA if set, else ~/.cache/genlab."""
    env = os.environ.get("GENLAB_DATA", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genlab"


def offline() -> bool:
    """True when GENLAB_OFFLINE asks us never to touch the network."""
    return os.environ.get("GENLAB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _candidates(filename: str) -> list[str]:
    """Names a file may carry on disk: as published (.gz), uncompressed, or with the '.idx' dot spelling."""
    stem = filename.removesuffix(".gz")  # e.g. train-images-idx3-ubyte
    dotted = stem.replace("-idx", ".idx")  # e.g. train-images.idx3-ubyte (Kaggle's spelling)
    return [filename, stem, dotted, dotted + ".gz"]


def find_local(name: str, filename: str) -> Path | None:
    """The first existing copy of `filename` for dataset `name` in the cache or the system dirs."""
    for root in [data_dir(), *SYSTEM_DIRS]:
        for candidate in _candidates(filename):
            path = root / name / candidate
            if path.is_file():
                return path
    return None


def _download_one(url: str, target: Path, md5: str, timeout: float) -> bool:
    """Stream `url` to a temp file beside `target`; rename it into place iff its MD5 matches."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            log.warning("checksum mismatch for %s (got %s, want %s)", url, digest.hexdigest(), md5)
            return False
        os.replace(tmp, target)  # atomic on one filesystem: readers see no file or the whole file
        return True
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
        log.warning("download of %s failed: %s", url, exc)
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _missing_error(name: str, missing: Iterable[str], target_dir: Path) -> DataError:
    files = ", ".join(missing)
    return DataError(f"cannot download {name} (offline?): put {files} into {target_dir}{os.sep}")


def download(name: str, filenames: list[str], timeout: float | None = None) -> dict[str, Path]:
    """Download `filenames` of dataset `name` into data_dir()/<name>/, trying each mirror in order."""
    target_dir = data_dir() / name
    if offline():
        raise _missing_error(name, filenames, target_dir)
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {target_dir} to download {name} into: {exc.strerror or exc}") from exc
    fetched: dict[str, Path] = {}
    for filename in filenames:
        target = target_dir / filename
        md5 = CHECKSUMS[name][filename]
        for mirror in MIRRORS.get(name, []):
            url = mirror.rstrip("/") + "/" + filename
            log.info("downloading %s", url)
            if _download_one(url, target, md5, TIMEOUT_S if timeout is None else timeout):
                fetched[filename] = target
                break
        else:
            break  # every mirror failed: likely offline, so don't wait out the timeouts for the rest
    missing = [f for f in filenames if f not in fetched]
    if missing:
        raise _missing_error(name, missing, target_dir)
    return fetched


def ensure_files(name: str, filenames: list[str]) -> dict[str, Path]:
    """Path of each of `filenames` for dataset `name`: found locally, or else downloaded."""
    found = {f: find_local(name, f) for f in filenames}
    paths = {f: p for f, p in found.items() if p is not None}
    missing = [f for f in filenames if f not in paths]
    if missing:
        paths.update(download(name, missing))
    return paths
