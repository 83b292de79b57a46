"""Images in and out of the server: untrusted uploads decoded safely, PNGs written with provenance.

Uploads are bytes from anyone: the format is checked against an allow-list, the pixel count is checked
before any pixel is decoded (a small PNG can declare 100,000 x 100,000 pixels), Pillow's own
decompression-bomb warning is an error here, and the image is then converted to the run's (C, H, W).
"""

from __future__ import annotations

import base64
import io
import json
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import GenlabError

ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
MAX_UPLOAD_PIXELS = 4096 * 4096  # a large phone photo fits; anything bigger is refused before decoding
MIN_UPLOAD_SIDE = 8  # smaller than this holds no digit worth reconstructing
REQUEST_KEY = (
    "genlab:request"  # PNG iTXt chunk: the request's details as JSON, beside genlab.provenance's fields
)


class UploadError(GenlabError):
    """An uploaded image the server will not use; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_upload(
    data: bytes, image_shape: tuple[int, int, int], invert: bool | None = None, crop: bool = True
) -> torch.Tensor:
    """Untrusted image bytes -> (1, C, H, W) float in [0, 1] in the run's shape.

    Transparent parts become black (a drawing on a transparent canvas is a digit on black, as in MNIST).
    For one-channel runs, invert=None inverts when the border is bright (dark ink on white paper), and
    crop=True frames the ink as MNIST does (its bounding box scaled into the central 20/28 of the image),
    so a digit drawn anywhere on a large canvas meets the model the way its training digits did.
    """
    channels, height, width = image_shape
    image = _open_checked(data)
    image = ImageOps.exif_transpose(image) if image.format == "JPEG" else image
    image = _flatten_alpha(image).convert("L" if channels == 1 else "RGB")
    if channels == 1 and (invert if invert is not None else _border_is_bright(image)):
        image = ImageOps.invert(image)
    if channels == 1 and crop:
        image = _frame_ink(image, width / height)
    image = _pad_to_aspect(image, width / height)
    # Area averaging when shrinking (no ringing around strokes, like MNIST's anti-aliasing); bilinear up.
    image = image.resize((width, height), Image.BOX if image.width >= width else Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
    tensor = torch.from_numpy(array.reshape(height, width, channels).copy()).permute(2, 0, 1)
    if tensor.shape[0] != channels:
        raise UploadError(f"cannot convert the image to {channels} channels", 422)
    return tensor.unsqueeze(0)


def _open_checked(data: bytes) -> Image.Image:
    if not data:
        raise UploadError("the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                raise UploadError(
                    f"image of {image.width}x{image.height} pixels is too large "
                    f"(at most {MAX_UPLOAD_PIXELS:,} pixels)",
                    413,
                )
            if min(image.size) < MIN_UPLOAD_SIDE:
                raise UploadError(f"image of {image.width}x{image.height} pixels is too small", 422)
            image.seek(0)  # first frame of an animation
            image.load()
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadError(f"image refused as a decompression bomb: {exc}", 413) from exc
    except Image.UnidentifiedImageError as exc:
        raise UploadError(
            f"not an image of an allowed type ({', '.join(ALLOWED_FORMATS).lower()})", 415
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        first_line = (str(exc).splitlines() or ["unreadable data"])[0]
        raise UploadError(f"could not decode the image: {first_line}") from exc
    return image


def _flatten_alpha(image: Image.Image) -> Image.Image:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode not in ("L", "RGB"):
        return image.convert("RGB")
    return image


def _border_is_bright(image: Image.Image) -> bool:
    array = np.asarray(image, dtype=np.float32)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    return float(border.mean()) > 127.5


def _frame_ink(image: Image.Image, aspect: float, ink_level: int = 40, fill: float = 20 / 28) -> Image.Image:
    """Crop a bright-on-dark image to its ink and centre it on black with MNIST's margin."""
    mask = np.asarray(image) > ink_level
    if not mask.any():
        return image  # blank: nothing to frame
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    ink = image.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
    height = round(max(ink.width / aspect, ink.height) / fill)  # the ink fills `fill` of the longer side
    canvas = Image.new("L", (max(ink.width, round(height * aspect)), max(ink.height, height)), 0)
    canvas.paste(ink, ((canvas.width - ink.width) // 2, (canvas.height - ink.height) // 2))
    return canvas


def _pad_to_aspect(image: Image.Image, aspect: float) -> Image.Image:
    """Pad (never crop or stretch) to the run's width/height ratio, with the border's colour."""
    width, height = image.size
    target_width = max(width, round(height * aspect))
    target_height = max(height, round(width / aspect))
    if (target_width, target_height) == (width, height):
        return image
    corner = image.getpixel((0, 0))
    canvas = Image.new(image.mode, (target_width, target_height), corner)
    canvas.paste(image, ((target_width - width) // 2, (target_height - height) // 2))
    return canvas


def encode_png(array: np.ndarray, provenance: tuple[dict[str, Any], dict[str, Any]], scale: int = 1) -> bytes:
    """An (H, W, C) uint8 array -> PNG bytes with genlab's provenance (genlab.provenance.png_info: XMP
    source type and genlab:* fields) plus the request's details as JSON in a `genlab:request` chunk.
    Every image the server returns goes through here."""
    from .. import provenance as prov

    record, request = provenance
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    info = prov.png_info(record)
    info.add_itxt(REQUEST_KEY, json.dumps(request, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_provenance(png: bytes) -> dict[str, Any]:
    """The genlab:* fields and request details of a PNG written by encode_png, as one flat dict (for
    tests and API clients; genlab.provenance.read reads the same fields from a file)."""
    with Image.open(io.BytesIO(png)) as image:
        text = {key: value for key, value in image.info.items() if isinstance(value, str)}
    fields = {key.removeprefix("genlab:"): value for key, value in text.items() if key.startswith("genlab:")}
    request = json.loads(fields.pop(REQUEST_KEY.removeprefix("genlab:"), "{}"))
    return {**fields, **request}


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
