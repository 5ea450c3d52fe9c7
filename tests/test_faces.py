"""explorer.faces: Haar-cascade face crop (largest face + margin, whole-image fallback) and the upload pipeline."""

from __future__ import annotations

import io
import threading

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from app_testdata import build, demo_backbone, face_image, image_bytes, plain_image
from explorer import faces
from explorer.errors import ExplorerError


def _inside(inner, outer) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def test_detects_the_drawn_face():
    boxes = faces.detect_faces(face_image())
    assert len(boxes) >= 1
    x0, y0, x1, y1 = boxes[0]
    assert 100 <= (x0 + x1) / 2 <= 300 and 80 <= (y0 + y1) / 2 <= 220  # centred on the face (200, 150)
    assert 120 <= x1 - x0 <= 300


def test_no_face_in_a_plain_image():
    assert faces.detect_faces(plain_image()) == []
    crop = faces.crop_face(plain_image())
    assert not crop.found and crop.crop_box is None and crop.image.size == (120, 90)
    assert "No face found" in crop.note and "whole image" in crop.note


def test_crop_is_square_contains_the_face_and_stays_inside():
    img = face_image(500, 360, cx=150, cy=180)
    crop = faces.crop_face(img, margin=0.4)
    assert crop.found and crop.num_faces >= 1
    x0, y0, x1, y1 = crop.crop_box
    assert _inside(crop.face_box, crop.crop_box)
    assert 0 <= x0 and 0 <= y0 and x1 <= 500 and y1 <= 360
    assert abs((x1 - x0) - (y1 - y0)) <= 1
    assert crop.image.size == (x1 - x0, y1 - y0)
    assert "Face found" in crop.note


def test_largest_face_wins():
    img = Image.new("RGB", (900, 420), (90, 110, 140))
    img.paste(face_image(300, 300), (20, 60))
    img.paste(face_image(420, 420, scale=1.5), (440, 0))
    crop = faces.crop_face(img)
    assert crop.num_faces >= 2
    cx = (crop.face_box[0] + crop.face_box[2]) / 2
    assert cx > 450


def test_big_photo_is_detected_through_the_downscaled_copy():
    img = face_image(2400, 1800, cx=1600, cy=900, scale=5.0)
    crop = faces.crop_face(img)
    assert crop.found
    fx = (crop.face_box[0] + crop.face_box[2]) / 2
    assert abs(fx - 1600) < 200  # boxes are in original pixels


def test_use_whole_image_switch():
    crop = faces.crop_face(face_image(), use_whole_image=True)
    assert not crop.found and crop.whole_image_requested and crop.image.size == (400, 300)
    assert "switched off" in crop.note


def test_expand_box():
    assert faces.expand_box((40, 40, 60, 60), (100, 100), margin=0.5) == (30, 30, 70, 70)
    # near a corner the square shifts inside the image instead of being cut
    assert faces.expand_box((0, 0, 20, 20), (100, 100), margin=0.5) == (0, 0, 40, 40)
    # never larger than the image
    x0, y0, x1, y1 = faces.expand_box((10, 10, 90, 50), (100, 60), margin=1.0)
    assert (x1 - x0, y1 - y0) == (60, 60) and y0 == 0
    with pytest.raises(ExplorerError):
        faces.expand_box((0, 0, 1, 1), (10, 10), margin=-0.1)


def test_annotate_draws_a_bounded_preview():
    img = face_image(1200, 900, scale=3)
    crop = faces.crop_face(img)
    prev = faces.annotate(img, crop, max_side=300)
    assert max(prev.size) == 300 and prev.mode == "RGB"
    assert not np.array_equal(np.asarray(prev), np.asarray(img.resize(prev.size)))


def test_exif_rotation_is_honoured_before_detection():
    upright = face_image()
    sideways = upright.rotate(90, expand=True)  # stored rotated; EXIF 6 says "rotate 90 CW to display"
    exif = Image.Exif()
    exif[0x0112] = 6
    data = image_bytes(sideways, "JPEG", exif=exif, quality=95)
    item = faces.prepare_upload(data, "phone.jpg")
    assert item.ok and item.image.size == (400, 300)
    assert item.crop.found


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("RGB", "WEBP"), ("RGB", "BMP"), ("RGB", "TIFF"), ("P", "PNG")])
def test_modes_and_formats(mode, fmt):
    img = face_image().convert(mode)
    item = faces.prepare_upload(image_bytes(img, fmt), f"x.{fmt.lower()}")
    assert item.ok, item.error
    assert item.image.mode == "RGB"


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"hello, I am text", "not an image"),
    (image_bytes(face_image())[:200], "could not be decoded"),
])
def test_bad_uploads_get_friendly_errors(data, words):
    item = faces.prepare_upload(data, "upload.png")
    assert not item.ok and words in item.error and "upload.png" in item.error


def test_pixel_limit():
    item = faces.prepare_upload(image_bytes(face_image()), "big.png", max_pixels=1000)
    assert not item.ok and "pixels" in item.error and "limit" in item.error


class CountingLock:
    def __init__(self):
        self.lock, self.entered = threading.Lock(), 0

    def __enter__(self):
        self.lock.acquire()
        self.entered += 1

    def __exit__(self, *exc):
        self.lock.release()


@pytest.fixture(scope="module")
def protos():
    from explorer.ranks import Ranks

    return build("rank", ranks=Ranks.integers(101, unit="years"), seed=7).prototypes()


def test_predict_uploads_end_to_end(protos):
    lock = CountingLock()
    uploads = [("face.png", image_bytes(face_image())), ("notes.png", b"text"), ("grass.jpg", image_bytes(plain_image(), "JPEG"))]
    result = faces.predict_uploads(uploads, protos, demo_backbone(), lock=lock)
    assert lock.entered == 1
    assert [it.ok for it in result.items] == [True, False, True]
    assert result.errors == [("notes.png", result.items[1].error)]
    rec = result.record(0)
    assert rec["unit"] == "years" and 0 <= rec["expected_value"] <= 100
    assert result.record(1) is None and result.probs(1) is None
    assert result.probs(2).shape == (101,) and result.probs(2).sum() == pytest.approx(1.0)
    # same numbers as encoding the crop directly
    direct = protos.predict(demo_backbone().encode_images([result.items[0].crop.image]))
    np.testing.assert_allclose(result.probs(0), direct.probs[0], atol=1e-5)
    table = result.table()
    assert list(table["image"]) == ["face.png", "notes.png", "grass.jpg"]
    assert table.loc[0, "face"] == "yes" and table.loc[2, "face"] == "no (whole image)"
    assert "not an image" in table.loc[1, "error"]
    csv = pd.read_csv(io.BytesIO(result.csv()))
    assert len(csv) == 3 and "90% low" in csv.columns


def test_predict_uploads_whole_image_and_all_bad(protos):
    result = faces.predict_uploads([("face.png", image_bytes(face_image()))], protos, demo_backbone(), use_whole_image=True)
    assert result.items[0].crop.whole_image_requested
    bad = faces.predict_uploads([("a.png", b"")], protos, demo_backbone())
    assert bad.prediction is None and len(bad.errors) == 1 and list(bad.table().columns) == ["image", "error"]


def test_overlay_distributions_encodes_once_per_backbone(protos):
    bb = demo_backbone()
    lock = CountingLock()
    out = faces.overlay_distributions(face_image(), [("a", protos, bb), ("b", protos, bb)], lock_for=lambda b: lock)
    assert [n for n, _ in out] == ["a", "b"] and lock.entered == 1
    np.testing.assert_allclose(out[0][1].probs, out[1][1].probs)
