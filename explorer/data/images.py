"""Reading user images safely: any common format, EXIF rotation honoured, RGB out, friendly errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from explorer.core.errors import ExplorerError

MAX_PIXELS = 40_000_000  # ~40 MP: larger uploads are refused before decoding
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "MPO")


def open_image(source: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image file or bytes to an upright RGB PIL image.

    Grey, palette, RGBA (composited on white), CMYK and 16-bit inputs are converted; EXIF
    orientation is applied. Raises ExplorerError for empty, non-image or oversized inputs.
    """
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        label = name or "the upload"
    else:
        path = Path(source)
        label = name or path.name
        if not path.is_file():
            raise ExplorerError(f"Image not found: {path}.")
        data = path.read_bytes()
    if not data:
        raise ExplorerError(f"{label} is empty (0 bytes); choose an image file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in FORMATS:
                raise ExplorerError(f"{label} is a {img.format} file; use PNG, JPEG, WebP, BMP or TIFF.")
            width, height = img.size
            if width * height > max_pixels:
                raise ExplorerError(
                    f"{label} is {width}x{height} pixels, over the {max_pixels / 1e6:g} MP limit; resize it first."
                )
            img.load()
    except ExplorerError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise ExplorerError(f"{label} is not an image PIL can read; use PNG, JPEG, WebP, BMP or TIFF.") from exc
        raise ExplorerError(f"{label} is too large to decode safely; resize it first.") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ExplorerError(f"{label} could not be decoded (truncated or corrupt image: {exc}).") from exc
    return to_rgb(ImageOps.exif_transpose(img))


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy of any PIL image; transparency is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v / 256).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")
