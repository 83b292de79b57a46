"""InceptionV3 feature extractor for FID, compatible with the pytorch-fid / torch-fidelity weights.

FID numbers are only comparable across papers when they come from one specific network: the
TensorFlow "2015-12-05" InceptionV3 graph, ported to PyTorch as `pt_inception-2015-12-05-6726825d.pth`.
That graph differs from torchvision's InceptionV3 in three places, all reproduced here:

* the average pool inside the A, C and first E blocks ignores the zero padding (TF semantics,
  `count_include_pad=False`);
* the last E block (`Mixed_7c`) pools with a max pool instead of an average pool;
* the classifier has 1008 classes (it is unused for FID, but it is in the file, so strict loading
  needs it).

The features are the 2048-d output of the final global average pool, after resizing the input to
299x299 (bilinear, `align_corners=False`) and mapping [0, 1] to [-1, 1], exactly as pytorch-fid does.

Module and parameter names match the keys of the weights file, so `load_state_dict(strict=True)` works
without any renaming. torchvision is deliberately not used: genlab must not depend on it.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import DataError, GenlabError

INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILENAME}"
# torch.hub convention: the 8 hex digits in the file name are the start of the file's SHA-256.
INCEPTION_SHA256_PREFIX = "6726825d"

FEATURE_DIM = 2048
INPUT_SIZE = 299
NUM_CLASSES = 1008  # TF's 1001 ImageNet classes padded to 1008; only needed for strict loading.

DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
# Tolerance for inputs a hair outside [0, 1] from float rounding (e.g. a sigmoid decoder).
_RANGE_TOL = 1e-3


# --------------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Conv (no bias: the BN beta replaces it) + BatchNorm (TF's eps=0.001) + ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: Tensor) -> Tensor:
    """3x3/1 'SAME' average pool as TF computes it: padded zeros are not counted in the mean."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and pool branches; out = 224 + pool_features."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)  # (N, 64, H, W)
        b5 = self.branch5x5_2(self.branch5x5_1(x))  # (N, 64, H, W)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))  # (N, 96, H, W)
        bp = self.branch_pool(_tf_avg_pool(x))  # (N, pool_features, H, W)
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (Mixed_6a); out = 384 + 96 + in_channels. Same as torchvision."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)  # (N, 384, H', W')
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))  # (N, 96, H', W')
        bp = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, in_channels, H', W')
        return torch.cat([b3, bd, bp], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..e); out = 4 * 192 = 768."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)  # (N, 192, H, W)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))  # (N, 192, H, W)
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))  # (N, 192, H, W)
        bp = self.branch_pool(_tf_avg_pool(x))  # (N, 192, H, W)
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (Mixed_7a); out = 320 + 192 + in_channels. Same as torchvision."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))  # (N, 320, H', W')
        b7 = self.branch7x7x3_1(x)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))  # (N, 192, H', W')
        bp = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, in_channels, H', W')
        return torch.cat([b3, b7, bp], 1)


class FIDInceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 outputs (Mixed_7b, Mixed_7c); out = 320 + 768 + 768 + 192 = 2048.

    `max_pool=False` is FIDInceptionE_1 (TF average pool without padding); `max_pool=True` is
    FIDInceptionE_2: the TF graph's Mixed_7c pools with a max pool, which we must copy to match FID.
    """

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)  # (N, 320, H, W)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)  # (N, 768, H, W)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)  # (N, 768, H, W)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        bp = self.branch_pool(pooled)  # (N, 192, H, W)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """The FID InceptionV3: images (N, C, H, W) in [0, 1] with C in {1, 3} -> (N, 2048) features.

    The module stays in eval mode even if `.train()` is called (e.g. by a parent module): FID features
    are only defined with the file's BatchNorm running statistics, never batch statistics.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        # Unused by FID (features are taken before it) but part of the weights file.
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        # Set by load_inception: the SHA-256 of the weights file, for reports to name the extractor.
        self.weights_sha256: str | None = None
        self.eval()

    def train(self, mode: bool = True) -> FIDInceptionV3:
        """Ignore `mode`: a feature extractor in train mode would silently use batch statistics."""
        return super().train(False)

    def preprocess(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [0, 1], C in {1, 3} -> (N, 3, 299, 299) in [-1, 1], as pytorch-fid does."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise DataError(f"FID inception expects images of shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise DataError(
                f"FID inception expects float images in [0, 1], got dtype {x.dtype}: divide by 255"
            )
        if x.numel() > 0:
            lo, hi = float(x.min()), float(x.max())
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise DataError("FID inception got NaN or inf pixel values: check the generator's outputs")
            if lo < -_RANGE_TOL or hi > 1.0 + _RANGE_TOL:
                raise DataError(
                    f"FID inception expects images in [0, 1], got values in [{lo:.3g}, {hi:.3g}]: "
                    "map [-1, 1] outputs with (x + 1) / 2 and clamp to [0, 1]"
                )
        x = x.to(self.fc.weight.dtype)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale -> RGB by repetition
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0  # (N, 3, 299, 299) in [-1, 1]

    def features(self, x: Tensor) -> Tensor:
        """Preprocessed (N, 3, 299, 299) -> (N, 2048) pool features."""
        x = self.Conv2d_1a_3x3(x)  # (N, 32, 149, 149)
        x = self.Conv2d_2a_3x3(x)  # (N, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_3b_1x1(x)  # (N, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        x = self.Mixed_5b(x)  # (N, 256, 35, 35)
        x = self.Mixed_5c(x)  # (N, 288, 35, 35)
        x = self.Mixed_5d(x)  # (N, 288, 35, 35)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        x = self.Mixed_6b(x)  # (N, 768, 17, 17)
        x = self.Mixed_6c(x)  # (N, 768, 17, 17)
        x = self.Mixed_6d(x)  # (N, 768, 17, 17)
        x = self.Mixed_6e(x)  # (N, 768, 17, 17)
        x = self.Mixed_7a(x)  # (N, 1280, 8, 8)
        x = self.Mixed_7b(x)  # (N, 2048, 8, 8)
        x = self.Mixed_7c(x)  # (N, 2048, 8, 8)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, 2048)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [0, 1] -> (N, 2048) FID features."""
        return self.features(self.preprocess(x))


# --------------------------------------------------------------------------------------------------
# Weights: locate, download, verify, load
# --------------------------------------------------------------------------------------------------


def _data_dir() -> Path:
    """$GENLAB_DATA, else ~/.cache/genlab: one root for everything genlab caches."""
    env = os.environ.get("GENLAB_DATA", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genlab"


def inception_weights_path() -> Path:
    """Where the FID inception weights are cached: <data_dir>/weights/<INCEPTION_FILENAME>."""
    return _data_dir() / "weights" / INCEPTION_FILENAME


def _one_line(text: object) -> str:
    """Collapse an exception text to one line: our messages are printed as a single CLI line."""
    return " ".join(str(text).split())


def _not_found(path: Path, url: str) -> GenlabError:
    return GenlabError(f"InceptionV3 weights not found: put {INCEPTION_FILENAME} (from {url}) at {path}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def inception_hash(path: Path | str) -> str:
    """Full SHA-256 hex of a weights file, so a report can name the exact extractor it used."""
    path = Path(path)
    if not path.is_file():
        raise _not_found(path, INCEPTION_URL)
    try:
        return _sha256(path)
    except OSError as e:
        raise GenlabError(f"Cannot read InceptionV3 weights at {path}: {_one_line(e)}") from e


def _download(url: str, dest: Path, sha256_prefix: str) -> str:
    """Download `url` to `dest` atomically if its SHA-256 starts with `sha256_prefix`; return the SHA-256.

    The temp file lives in dest's directory so os.replace is atomic: a crash or a concurrent process
    never sees a half-written weights file at `dest`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        try:
            with (
                os.fdopen(fd, "wb") as f,
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            ):
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    f.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as e:  # HTTPError and timeouts are OSErrors
            raise GenlabError(
                f"Could not download InceptionV3 weights from {url} ({_one_line(e)}): "
                f"put {INCEPTION_FILENAME} at {dest} by hand"
            ) from e
        got = digest.hexdigest()
        if not got.startswith(sha256_prefix):
            raise GenlabError(
                f"Download from {url} is corrupt or not the FID InceptionV3 weights (sha256 {got[:16]}..., "
                f"expected {sha256_prefix}...): retry, or put {INCEPTION_FILENAME} at {dest}"
            )
        os.replace(tmp, dest)
        return got
    finally:
        tmp.unlink(missing_ok=True)


def _read_state_dict(path: Path) -> Mapping[str, Tensor]:
    """Load a plain state_dict with weights_only=True: never unpickle arbitrary objects from disk."""
    bad = f"{path} is corrupt or not the FID InceptionV3 weights"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise GenlabError(f"Cannot read InceptionV3 weights at {path}: {_one_line(e)}") from e
    except Exception as e:  # UnpicklingError (refused object), RuntimeError/EOFError (truncated), ...
        first = _one_line(str(e).strip().splitlines()[0] if str(e).strip() else "")
        raise GenlabError(f"{bad} ({type(e).__name__}: {first[:160]}): delete it and fetch it again") from e
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise GenlabError(f"{bad} (not a state dict of tensors): delete it and fetch it again")
    return obj  # not copied: a state dict's `_metadata` (module versions) must reach load_state_dict


def _check_layout(model: FIDInceptionV3, state: Mapping[str, Tensor], path: Path) -> None:
    """Compare keys and shapes first, so the message names the difference rather than a torch dump.

    `num_batches_tracked` may be absent: the TF-converted file is a plain dict without BN counters, and
    torch's BatchNorm fills them in on load for such (version-less) state dicts.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise GenlabError(
            f"{path} is corrupt or not the FID InceptionV3 weights: {', '.join(parts)} keys; "
            "delete it and fetch it again"
        )


def load_inception(
    path: Path | str | None = None, download: bool = True, url: str | None = None, verify: bool = True
) -> FIDInceptionV3:
    """Build the FID InceptionV3 with the pt_inception weights, in eval mode, on the CPU, frozen.

    Looks at `path` if given, else at inception_weights_path(). A missing file is downloaded from
    `url` (default INCEPTION_URL) to that place unless `download=False` or GENLAB_OFFLINE=1; a download
    is kept only if its SHA-256 starts with INCEPTION_SHA256_PREFIX. A file on disk is hashed too
    (~0.2 s), because a right-shaped but wrong state dict would give plausible, incomparable FIDs;
    `verify=False` skips that for a deliberately re-serialized copy. Either way the file must be a plain
    state dict with exactly this architecture's keys and shapes. The model's `weights_sha256` records
    the file's full SHA-256.
    """
    target = Path(path).expanduser() if path is not None else inception_weights_path()
    source_url = url if url is not None else INCEPTION_URL
    prefix = INCEPTION_SHA256_PREFIX.lower()
    if target.is_file():
        digest = inception_hash(target)
        if verify and not digest.startswith(prefix):
            raise GenlabError(
                f"{target} is corrupt or not the FID InceptionV3 weights (sha256 {digest[:16]}..., expected "
                f"{prefix}...): delete it and fetch it again, or pass verify=False for a re-serialized copy"
            )
    elif not download or os.environ.get("GENLAB_OFFLINE") == "1":
        raise _not_found(target, source_url)
    else:
        digest = _download(source_url, target, prefix)

    state = _read_state_dict(target)
    model = FIDInceptionV3()
    _check_layout(model, state, target)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # e.g. dtype that cannot be copied; the layout itself was checked above
        raise GenlabError(
            f"{target} is corrupt or not the FID InceptionV3 weights ({_one_line(e)[:160]})"
        ) from e
    model.requires_grad_(False)
    model.weights_sha256 = digest
    return model.eval()
