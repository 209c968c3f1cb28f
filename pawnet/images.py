"""The one path from an image file to the pixels a network sees.

Training, evaluation, prediction, explanation, serving and export checks all call `load_pixels`
with the `Preprocessing` stored in the model's config, so a photo is never prepared two ways.
This module needs only Pillow and NumPy: an exported model predicts without PyTorch.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

# Above this many pixels an image is refused as a decompression bomb (about 89 megapixels,
# Pillow's own warning threshold), rather than Pillow's default of only warning.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


class ImageError(Exception):
    """A file that cannot be turned into pixels; its message is one line for the user."""


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes the network's input; saved in every model's config.json.

    `size` is the square side the network sees. `resize` is "squash" (the whole photo, aspect
    ignored, as Keras's flow_from_directory does) or "crop" (shorter side to `size`, centre crop).
    `mean` and `std` are in 0-255 pixel units: the network computes (pixel - mean) / std itself.
    """

    size: int = 64
    resize: str = "squash"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            size=int(d["size"]),
            resize=str(d.get("resize", "squash")),
            mean=tuple(float(v) for v in d.get("mean", (0, 0, 0))),
            std=tuple(float(v) for v in d.get("std", (255, 255, 255))),
        )


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _open(source) -> Image.Image:
    if isinstance(source, np.ndarray):
        return Image.fromarray(source)
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with warnings.catch_warnings():
        # Pillow warns between 1x and 2x its limit (and refuses above): `load_pixels` checks the
        # size itself, after a JPEG's reduction, before anything is decoded.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source)


def _check_pixels(img: Image.Image, limit: int) -> None:
    w, h = img.size
    if w * h > limit:
        side = math.isqrt(limit)
        raise ImageError(f"refused: {w}x{h} pixels is over the pixel limit of {limit:,} (about {side}x{side})")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is laid over white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's convert() clips 16-bit and float values at 255; scale them down instead.
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if (img.mode.startswith("I;16") or a.max() > 255) else 255.0
        if img.mode == "F" and a.max() <= 1.0:
            top = 1.0
        img = Image.fromarray(np.clip(a * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def _fit(img: Image.Image, size: int, resize: str) -> Image.Image:
    if resize == "squash":
        return img.resize((size, size), Image.BILINEAR)
    if resize == "crop":
        w, h = img.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        return img.crop((left, top, left + size, top + size))
    raise ValueError(f"unknown resize method {resize!r}")


def load_pixels(source, prep: Preprocessing, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode one image (path, bytes, PIL image or uint8 array) to `size` x `size` x 3 uint8 RGB.

    JPEGs are decoded at reduced scale (Pillow's draft mode) when they are much larger than
    `size`, which makes decoding several times faster. EXIF orientation is applied.
    An image that would decode to more than `max_pixels` (a JPEG: after that reduction; a
    progressive JPEG: at full size, which its decoder holds whole) is refused.
    Raises ImageError with a one-line reason for anything that is not a readable image.
    """
    try:
        img = _open(source)
        with img:
            if img.format == "JPEG" and img.mode in ("RGB", "L"):
                if img.info.get("progressive") or img.info.get("progression"):
                    _check_pixels(img, max_pixels)
                img.draft(img.mode, (prep.size, prep.size))
            _check_pixels(img, max_pixels)
            img.load()
            img = ImageOps.exif_transpose(img)
            return np.asarray(_fit(to_rgb(img), prep.size, prep.resize), dtype=np.uint8)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as e:
        raise ImageError(reason(e)) from None


def reason(e: Exception) -> str:
    """Why a file could not be read, in one line for the user (no object addresses, no errno)."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, Image.UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(e, Image.DecompressionBombError):
        return f"refused: image too large ({text})"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, FileNotFoundError) and e.filename and os.path.islink(e.filename):
        return f"a link to {os.readlink(e.filename)}, which is not there"
    if isinstance(e, OSError) and e.strerror:  # the system's words without "[Errno 2] ... 'path'"
        return e.strerror
    return text
