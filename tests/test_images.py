"""open_image (explorer/images.py): every common format, EXIF rotation, mode conversion, friendly errors.

Real files written by PIL in tmp_path (and the same bytes in memory); expected pixels are the
arrays the images were made from, rotated / composited independently with numpy.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from explorer.core.errors import ExplorerError
from explorer.data.images import MAX_PIXELS, open_image


def _pattern(w=48, h=32) -> np.ndarray:
    """An H x W x 3 uint8 image of four flat quadrants (survives JPEG with small errors)."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (220, 30, 30)
    a[: h // 2, w // 2 :] = (30, 200, 40)
    a[h // 2 :, : w // 2] = (20, 40, 210)
    a[h // 2 :, w // 2 :] = (240, 240, 30)
    return a


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _interior_error(got: np.ndarray, want: np.ndarray, margin: int = 4) -> int:
    """Max abs difference away from the quadrant edges (where JPEG rings)."""
    h, w = want.shape[:2]
    mask = np.ones((h, w), bool)
    for y in (0, h // 2, h):
        mask[max(0, y - margin) : y + margin] = False
    for x in (0, w // 2, w):
        mask[:, max(0, x - margin) : x + margin] = False
    return int(np.abs(got.astype(int) - want.astype(int))[mask].max())


LOSSLESS = [("PNG", ".png", {}), ("BMP", ".bmp", {}), ("TIFF", ".tif", {}), ("WEBP", ".webp", {"lossless": True})]


@pytest.mark.parametrize("fmt,suffix,kw", LOSSLESS)
def test_lossless_round_trip(tmp_path, fmt, suffix, kw):
    want = _pattern()
    data = _encode(Image.fromarray(want), fmt, **kw)
    path = tmp_path / f"img{suffix}"
    path.write_bytes(data)
    for source in (path, str(path), data, bytearray(data)):
        img = open_image(source)
        assert img.mode == "RGB" and img.size == (48, 32)
        np.testing.assert_array_equal(np.asarray(img), want)


@pytest.mark.parametrize("fmt,kw", [("JPEG", {"quality": 95}), ("WEBP", {"quality": 90})])
def test_lossy_round_trip(tmp_path, fmt, kw):
    want = _pattern()
    path = tmp_path / "img.bin"  # the extension does not matter, the content does
    path.write_bytes(_encode(Image.fromarray(want), fmt, **kw))
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (48, 32)
    assert _interior_error(np.asarray(img), want) <= 12


@pytest.mark.parametrize("orientation,k", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_honoured(orientation, k):
    """Orientation 6: the stored image must be turned 90 degrees clockwise to be upright (8: counter-clockwise)."""
    stored = _pattern(48, 32)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif)
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == orientation
    img = open_image(data)
    upright = np.rot90(stored, k=k)  # k=-1: clockwise
    assert img.size == (upright.shape[1], upright.shape[0])
    if orientation in (6, 8):
        assert img.size == (32, 48)  # width and height swapped
    assert _interior_error(np.asarray(img), upright) <= 12
    # the red quadrant (stored top-left) ends up top-right after a clockwise turn
    if orientation == 6:
        assert tuple(np.asarray(img)[5, -5]) == pytest.approx((220, 30, 30), abs=12)


def test_grey_image_gives_rgb():
    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (10, 1))
    img = open_image(_encode(Image.fromarray(grey, mode="L"), "PNG"))
    assert img.mode == "RGB" and img.size == (32, 10)
    np.testing.assert_array_equal(np.asarray(img), np.repeat(grey[..., None], 3, axis=2))


def test_rgba_is_composited_on_white():
    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[0] = (10, 20, 30, 255)   # opaque: kept
    rgba[1] = (10, 20, 30, 0)     # transparent: white
    rgba[2] = (0, 0, 0, 128)      # half black over white: ~127
    rgba[3] = (200, 100, 0, 64)
    img = open_image(_encode(Image.fromarray(rgba, mode="RGBA"), "PNG"))
    assert img.mode == "RGB"
    a = rgba[..., 3:].astype(float) / 255
    want = rgba[..., :3] * a + 255 * (1 - a)
    got = np.asarray(img).astype(float)
    assert np.abs(got - want).max() <= 1
    np.testing.assert_array_equal(np.asarray(img)[1], 255)
    np.testing.assert_array_equal(np.asarray(img)[0], [[10, 20, 30]] * 3)


def test_palette_with_transparency_and_grey_alpha():
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 1)
    img = open_image(_encode(pal, "PNG", transparency=0))
    got = np.asarray(img)
    assert img.mode == "RGB"
    assert tuple(got[0, 0]) == (0, 0, 255) and tuple(got[3, 3]) == (255, 255, 255)

    la = Image.new("LA", (2, 2), (50, 0))
    la.putpixel((1, 1), (50, 255))
    got = np.asarray(open_image(_encode(la, "PNG")))
    assert tuple(got[0, 0]) == (255, 255, 255) and tuple(got[1, 1]) == (50, 50, 50)


def test_cmyk_jpeg_gives_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta + yellow: red
    data = _encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = open_image(data)
    assert img.mode == "RGB"
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert r > 230 and g < 25 and b < 25


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_gives_rgb(fmt):
    grey16 = (np.arange(40 * 20, dtype=np.uint32).reshape(20, 40) * 81).astype(np.uint16)  # 0 .. 64719
    data = _encode(Image.fromarray(grey16), fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    img = open_image(data)
    assert img.mode == "RGB" and img.size == (40, 20)
    got = np.asarray(img).astype(int)
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()
    assert np.abs(got[..., 0] - (grey16.astype(int) // 256)).max() <= 1  # scaled to 8 bits, not clipped
    assert got.max() >= 250


def test_bilevel_gives_rgb():
    bits = Image.fromarray(np.eye(8, dtype=bool))
    got = np.asarray(open_image(_encode(bits, "PNG")))
    np.testing.assert_array_equal(got[..., 0], np.eye(8, dtype=np.uint8) * 255)


# --- errors ---------------------------------------------------------------------------------------


def test_empty_input(tmp_path):
    with pytest.raises(ExplorerError, match=r"the upload is empty \(0 bytes\); choose an image file"):
        open_image(b"")
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ExplorerError, match=r"empty.png is empty \(0 bytes\)"):
        open_image(path)


@pytest.mark.parametrize("data", [
    b"hello, I am a text file\n" * 10,
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 200,
    bytes(range(256)) * 4,
])
def test_non_image_bytes(tmp_path, data):
    path = tmp_path / "notes.jpg"
    path.write_bytes(data)
    with pytest.raises(ExplorerError, match="notes.jpg is not an image PIL can read; use PNG, JPEG"):
        open_image(path)
    with pytest.raises(ExplorerError, match="photo.png is not an image"):
        open_image(data, name="photo.png")


@pytest.mark.parametrize("fmt,keep", [("JPEG", 0.6), ("PNG", 0.5)])
def test_truncated_image(fmt, keep):
    rng = np.random.default_rng(0)
    data = _encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), fmt)
    with pytest.raises(ExplorerError, match=r"cut\.\w+ could not be decoded \(truncated or corrupt image"):
        open_image(data[: int(len(data) * keep)], name=f"cut.{fmt.lower()}")


def test_missing_file(tmp_path):
    with pytest.raises(ExplorerError, match="Image not found"):
        open_image(tmp_path / "nope.png")
    with pytest.raises(ExplorerError, match="Image not found"):
        open_image(tmp_path)  # a folder


def test_unsupported_format_is_named():
    data = _encode(Image.fromarray(_pattern()), "PPM")
    with pytest.raises(ExplorerError, match="is a PPM file; use PNG, JPEG, WebP, BMP or TIFF"):
        open_image(data)


def test_over_max_pixels_is_refused_before_decoding():
    data = _encode(Image.fromarray(_pattern(48, 32)), "PNG")  # 1536 pixels
    assert open_image(data, max_pixels=1536).size == (48, 32)
    with pytest.raises(ExplorerError) as info:
        open_image(data, name="big.png", max_pixels=1535)
    msg = str(info.value)
    assert "big.png is 48x32 pixels" in msg and "resize it first" in msg
    assert " 0 MP" not in msg  # the limit is stated as it is, not rounded away
    assert MAX_PIXELS == 40_000_000
    with pytest.raises(ExplorerError, match="over the 40 MP limit"):
        # a 8000 x 6000 PNG header is enough: the size is checked before any pixel is decoded
        open_image(_encode(Image.new("1", (8000, 6000)), "PNG"))
