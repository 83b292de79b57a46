"""The genlab compressed image format: an autoencoder's codes, quantized and entropy-coded.

Layout (a binary header, so a one-image file stays small; integers little-endian):
    magic b"GLZC" | format version (u8) | SHA-256 of the weights file that encoded the codes (32 bytes)
    | image channels (u8), height (u16), width (u16) | code dimensions (u16) | bits (u8) | images (u32)
    | CRC-32 of the quantized symbols (u32) | run path length (u16) + run path (UTF-8; may be empty)
    | names length (u32) + names (zlib of UTF-8, one per line)
    | payload length (u32) + payload (constriction ANS stream) | CRC-32 of everything before (u32)
Decoding with another model is an error, not garbage (the SHA-256). The symbols' CRC is a second guard:
if a decoder's probability tables ever differed from the encoder's, its symbols would not match.

Quantization needs no side information: each code dimension d gets a grid centred on the mean of the
model's own code distribution with step 8 * std_d / 2**bits (2**bits steps over +-4 std), and symbols
are clamped to +-2**(bits+1) steps. The entropy model is that same distribution's marginal per dimension,
integrated over each grid cell: the autoencoder's Gaussian mixture (fitted to its training codes and
saved with its weights) or the VAE's N(0, I) prior. Both ends derive it from the run alone.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.special import ndtr

from ..errors import DataError
from .denoise import require_autoencoder
from .images import check_shape

MAGIC = b"GLZC"
FORMAT_VERSION = 1
MIN_BITS, MAX_BITS = 1, 8
_FIXED = struct.Struct("<4sB32sBHHHBII")  # magic .. symbols' CRC
_LENGTH = struct.Struct("<I")
_SHORT = struct.Struct("<H")
_CRC = struct.Struct("<I")


class CodecError(DataError):
    """A compressed file that is truncated, corrupt, foreign, or meant for another model."""


@dataclass
class Compressed:
    header: dict  # model_sha256, image_shape, latent_dim, bits, n, symbols_crc32, run_path, names (optional)
    payload: bytes

    def to_bytes(self) -> bytes:
        h = self.header
        names = zlib.compress("\n".join(h.get("names") or []).encode(), 9) if h.get("names") else b""
        body = _FIXED.pack(
            MAGIC, FORMAT_VERSION, bytes.fromhex(h["model_sha256"]), *h["image_shape"], h["latent_dim"],
            h["bits"], h["n"], h["symbols_crc32"],
        )  # fmt: skip
        run_path = str(h.get("run_path") or "").encode()
        body += (
            _SHORT.pack(len(run_path))
            + run_path
            + _LENGTH.pack(len(names))
            + names
            + _LENGTH.pack(len(self.payload))
            + self.payload
        )
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "the file") -> Compressed:
        if len(data) < 5 or data[:4] != MAGIC:
            raise CodecError(f"{source} is not a genlab compressed file (no GLZC magic number)")
        if data[4] != FORMAT_VERSION:
            raise CodecError(
                f"{source} uses format version {data[4]}; this genlab reads version {FORMAT_VERSION}"
            )
        if len(data) < _FIXED.size + 2 * _LENGTH.size + _CRC.size:
            raise CodecError(f"{source} is truncated ({len(data)} bytes)")
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(data[: -_CRC.size]) != crc:
            raise CodecError(f"{source} is corrupt or truncated: its checksum does not match")
        _, _, sha, c, h, w, latent_dim, bits, n, symbols_crc = _FIXED.unpack_from(data)
        at = _FIXED.size
        (path_len,) = _SHORT.unpack_from(data, at)
        run_path = data[at + _SHORT.size : at + _SHORT.size + path_len]
        at += _SHORT.size + path_len
        if at + _LENGTH.size > len(data) - _CRC.size:
            raise CodecError(f"{source} has a broken layout")
        (names_len,) = _LENGTH.unpack_from(data, at)
        names_blob = data[at + _LENGTH.size : at + _LENGTH.size + names_len]
        at += _LENGTH.size + names_len
        if at + _LENGTH.size > len(data) - _CRC.size:
            raise CodecError(f"{source} has a broken layout")
        (payload_len,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if at + payload_len != len(data) - _CRC.size:
            raise CodecError(f"{source} has a broken layout")
        header = {
            "model_sha256": sha.hex(), "image_shape": [c, h, w], "latent_dim": latent_dim, "bits": bits,
            "n": n, "symbols_crc32": symbols_crc, "run_path": run_path.decode("utf-8", "replace"),
        }  # fmt: skip
        if names_len:
            try:
                header["names"] = zlib.decompress(names_blob).decode().split("\n")
            except (zlib.error, UnicodeDecodeError) as exc:
                raise CodecError(f"{source} has unreadable file names: {exc}") from exc
        return cls(header, bytes(data[at : at + payload_len]))


def weights_sha256(run) -> str:
    """SHA-256 of the weights file the run loaded (its EMA weights when it kept them)."""
    ema = Path(run.checkpoint) / "ema.safetensors"
    path = ema if ema.is_file() else Path(run.checkpoint) / "model.safetensors"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_distribution(model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's distribution of codes as a mixture of per-dimension Gaussians:
    weights (K,), means (K, D), stds (K, D), in float64. An AE's fitted mixture, a VAE's N(0, I)."""
    prior = getattr(model, "prior", None)
    if prior is not None and hasattr(prior, "scale_tril"):
        weights = prior.log_weights.detach().double().exp().cpu().numpy()
        means = prior.means.detach().double().cpu().numpy()
        stds = prior.scale_tril.detach().double().pow(2).sum(dim=2).sqrt().cpu().numpy()  # diag of L L^T
        return weights / weights.sum(), means, stds
    d = model.config.latent_dim
    return np.ones(1), np.zeros((1, d)), np.ones((1, d))


def quantization_grid(model, bits: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-dimension centre (D,) and step (D,) and the symbol bound L (symbols lie in [-L, L])."""
    weights, means, stds = code_distribution(model)
    centre = weights @ means  # (D,)
    variance = weights @ (stds**2 + means**2) - centre**2
    std = np.sqrt(np.maximum(variance, 1e-12))
    return centre, 8.0 * std / 2**bits, 2 ** (bits + 1)


def symbol_probabilities(model, bits: int) -> np.ndarray:
    """(D, 2L + 1) probability of each symbol per dimension: the mixture's mass over each grid cell
    (the outermost cells take the tails)."""
    weights, means, stds = code_distribution(model)
    centre, step, bound = quantization_grid(model, bits)
    edges = centre[:, None] + step[:, None] * (np.arange(-bound, bound + 2) - 0.5)  # (D, 2L + 2)
    edges[:, 0], edges[:, -1] = -np.inf, np.inf
    cdf = np.einsum("k,kde->de", weights, ndtr((edges[None] - means[:, :, None]) / stds[:, :, None]))
    return np.maximum(np.diff(cdf, axis=1), 0.0)  # (D, 2L + 1); constriction keeps every symbol codable


def quantize(model, codes: torch.Tensor, bits: int) -> np.ndarray:
    centre, step, bound = quantization_grid(model, bits)
    symbols = np.rint((codes.detach().double().cpu().numpy() - centre) / step)
    return np.clip(symbols, -bound, bound).astype(np.int32)  # (N, D)


def dequantize(model, symbols: np.ndarray, bits: int) -> torch.Tensor:
    centre, step, _ = quantization_grid(model, bits)
    return torch.from_numpy(centre + symbols.astype(np.float64) * step).float()


_CHUNK = 64  # images per probability table: bounds memory at 64 * D * (2L + 1) floats


def encode_symbols(symbols: np.ndarray, probabilities: np.ndarray) -> bytes:
    """(N, D) symbols in [-L, L] -> an ANS stream, each dimension with its own categorical model."""
    import constriction

    bound = probabilities.shape[1] // 2
    family = constriction.stream.model.Categorical(perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    table = probabilities.astype(np.float32)
    # A stack coder decodes last-in first-out: encode the chunks back to front.
    for start in reversed(range(0, len(symbols), _CHUNK)):
        chunk = symbols[start : start + _CHUNK]
        flat = (chunk + bound).reshape(-1).astype(np.int32)
        coder.encode_reverse(flat, family, np.tile(table, (len(chunk), 1)))
    return coder.get_compressed().tobytes()


def most_images(probabilities: np.ndarray, payload_bytes: int) -> int:
    """An upper bound on the images an ANS stream of this size can hold: each image costs at least
    sum_d -log2(max_s p(d, s)) bits (a margin covers constriction's 24-bit probabilities), and a stack
    coder's stream falls short of the information it holds by at most its 64-bit initial state."""
    p = probabilities / probabilities.sum(axis=1, keepdims=True)
    least_bits = float(-np.log2(np.minimum(p.max(axis=1) + 1e-6, 1.0)).sum())
    if least_bits <= 0:
        return 2**32
    return int((8 * payload_bytes + 64) / least_bits) + 1


def decode_symbols(payload: bytes, probabilities: np.ndarray, n: int) -> np.ndarray:
    import constriction

    if len(payload) % 4:
        raise CodecError("the compressed stream has a broken length")
    bound, dims = probabilities.shape[1] // 2, probabilities.shape[0]
    most = most_images(probabilities, len(payload))
    if n > most:  # a damaged count would otherwise decode garbage for a very long time
        raise CodecError(
            f"the header declares {n} images, but a stream of {len(payload)} bytes holds at most {most}"
        )
    family = constriction.stream.model.Categorical(perfect=False)
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype=np.uint32).copy())
    table = probabilities.astype(np.float32)
    chunks = []
    for start in range(0, n, _CHUNK):
        count = min(_CHUNK, n - start)
        flat = coder.decode(family, np.tile(table, (count, 1)))
        chunks.append(np.asarray(flat, dtype=np.int64).reshape(count, dims) - bound)
    if not coder.is_empty():
        raise CodecError("the compressed stream has bytes left over after the last image")
    return np.concatenate(chunks).astype(np.int32) if chunks else np.zeros((0, dims), np.int32)


def _codes(model, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.embed(c.to(model.device)).cpu() for c in images.split(batch_size)])


def compress(
    run, images: torch.Tensor, bits: int = 6, names: list[str] | None = None, store_run_path: bool = True
) -> Compressed:
    """Images (N, C, H, W) in [0, 1] -> a Compressed file (`.to_bytes()` gives its bytes). The run's
    absolute path goes in the file (store_run_path) so that decompressing needs no --run where it exists."""
    require_autoencoder(run, "compress")
    if getattr(run.model, "is_conditional", False):
        raise DataError(
            f"model {run.model.name!r} is conditional: its codes need the labels; compress with an unconditional run"
        )
    if not MIN_BITS <= bits <= MAX_BITS:
        raise DataError(f"bits must lie in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    model = run.model.eval()
    check_shape(images, tuple(model.config.image_shape), "the input")
    symbols = quantize(model, _codes(model, images), bits)
    header = {
        "model_sha256": weights_sha256(run),
        "image_shape": list(model.config.image_shape),
        "latent_dim": int(symbols.shape[1]),
        "n": len(symbols),
        "bits": bits,
        "symbols_crc32": zlib.crc32(symbols.astype("<i4").tobytes()),
    }
    if store_run_path:
        header["run_path"] = str(Path(run.run_dir).resolve())
    if names:
        header["names"] = list(names)
    return Compressed(header, encode_symbols(symbols, symbol_probabilities(model, bits)))


def decompress_symbols(run, compressed: Compressed, source: str = "the file") -> np.ndarray:
    header, model = compressed.header, run.model
    try:
        sha, n, bits = str(header["model_sha256"]), int(header["n"]), int(header["bits"])
        shape, latent_dim = list(header["image_shape"]), int(header["latent_dim"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"{source} has an incomplete header ({exc})") from exc
    ours = weights_sha256(run)
    if sha != ours:
        raise CodecError(
            f"{source} was compressed by the model with weights SHA-256 {sha[:12]}..., but "
            f"{run.run_dir} holds {ours[:12]}...: decompress it with the run that compressed it"
        )
    if shape != list(model.config.image_shape) or latent_dim != model.config.latent_dim:
        raise CodecError(f"{source} does not match the model's image shape or code size")
    if not MIN_BITS <= bits <= MAX_BITS or n < 0:
        raise CodecError(f"{source} has a bad header (bits {bits}, n {n})")
    try:
        symbols = decode_symbols(compressed.payload, symbol_probabilities(model, bits), n)
    except (ValueError, RuntimeError) as exc:
        raise CodecError(f"{source} holds a corrupt code stream: {exc}") from exc
    if zlib.crc32(symbols.astype("<i4").tobytes()) != header.get("symbols_crc32"):
        raise CodecError(f"{source} decoded to the wrong codes: file and model disagree")
    return symbols


def decompress(run, compressed: Compressed, source: str = "the file", batch_size: int = 500) -> torch.Tensor:
    """A Compressed file -> images (N, C, H, W) in [0, 1], with the run that compressed it."""
    require_autoencoder(run, "decompress")
    model = run.model.eval()
    symbols = decompress_symbols(run, compressed, source)
    codes = dequantize(model, symbols, int(compressed.header["bits"]))
    with torch.no_grad():
        parts = [model.decode(c.to(model.device)).cpu() for c in codes.split(batch_size)]
    return torch.cat(parts).clamp(0.0, 1.0) if parts else torch.zeros(0, *model.config.image_shape)


def bits_per_image(compressed: Compressed) -> float:
    return 8.0 * len(compressed.to_bytes()) / max(1, int(compressed.header["n"]))


def entropy_bits(probabilities: np.ndarray, symbols: np.ndarray, bound: int) -> float:
    """The ideal code length of `symbols` under the tables, in bits (what ANS should come close to)."""
    p = probabilities / probabilities.sum(axis=1, keepdims=True)
    picked = p[np.arange(p.shape[0])[None, :], symbols + bound]
    return float(-np.log2(np.maximum(picked, 1e-300)).sum())


__all__ = ["MAGIC", "FORMAT_VERSION", "CodecError", "Compressed", "compress", "decompress", "weights_sha256"]
