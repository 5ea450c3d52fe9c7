"""explorer.data.faces: the CNN face detector on real photos, face crop (largest or chosen face + margin,
whole-image fallback) and the preview (uploads: test_uploads.py)."""

from __future__ import annotations

import face_photos as fp
import numpy as np
import pytest
from app_testdata import face_image, plain_image
from PIL import Image

from explorer.core.errors import ExplorerError
from explorer.data import faces


def _inside(inner, outer) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def test_detects_the_drawn_face():
    found = faces.detect_faces(face_image())
    assert len(found) >= 1 and faces.MIN_SCORE <= found[0].score <= 1
    x0, y0, x1, y1 = found[0].box
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


# --- the detector on real photos (scikit-image / scikit-learn sample images) ---------------------


@pytest.fixture(scope="module")
def face_sets():
    return {"portraits": fp.portraits(), "tight crops": fp.tight_crops()}


@pytest.mark.parametrize("which", ["portraits", "tight crops"])
def test_detection_rate_on_real_faces(face_sets, which):
    samples = face_sets[which]
    assert len(samples) >= 20
    missed = [name for name, image, centre, size in samples
              if not fp.hit([f.box for f in faces.detect_faces(image)], centre, size)]
    rate = 1 - len(missed) / len(samples)
    assert rate >= 0.99, f"{which}: {rate:.0%} found, missed {missed}"


def test_at_most_one_false_face_on_photos_without_faces():
    photos = fp.no_faces()
    assert len(photos) >= 10
    false = [(name, [f.score for f in found]) for name, image in photos if (found := faces.detect_faces(image))]
    assert sum(len(scores) for _, scores in false) <= 1, false


def test_astronaut_box_is_plausible():
    image = fp.photo("astronaut")
    found = faces.detect_faces(image)
    assert len(found) == 1
    face = found[0]
    x0, y0, x1, y1 = face.box
    assert y1 <= image.height * 0.45  # the face lies in the upper part of the portrait
    assert 0.1 * image.width <= x1 - x0 <= 0.35 * image.width and 0.8 <= (y1 - y0) / (x1 - x0) <= 1.6
    assert fp.hit([face.box], (222, 118), 110) and face.score >= 0.85
    assert len(face.landmarks) == 5 and all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.landmarks)
    crop = faces.crop_face(image)
    assert crop.summary() == {"found": True, "box": list(face.box), "score": face.score}


def test_two_faces_and_picking_one():
    image, centres = fp.two_faces()
    crop = faces.crop_face(image)
    assert crop.found and crop.num_faces == 2 and crop.face_index == 0
    assert all(fp.hit([f.box], c, 200) for f, c in zip(crop.faces, centres))  # largest (left) first
    assert "2 faces found" in crop.note and "largest" in crop.note
    second = faces.crop_face(image, face_index=1, faces=crop.faces)
    assert second.face_index == 1 and second.face_box == crop.faces[1].box
    assert _inside(second.face_box, second.crop_box) and second.crop_box[0] > image.width / 2
    assert "face 2" in second.note and second.face_label(1).startswith("Face 2 of 2 (score ")
    # an index that does not exist falls back to the largest face
    assert faces.crop_face(image, face_index=5).face_index == 0
    # the preview draws both faces and the crop
    prev = np.asarray(faces.annotate(image, second, max_side=image.width)).astype(int)
    (fx0, fy0, _, _), (sx0, sy0, _, _) = crop.faces[0].box, crop.faces[1].box
    assert prev[fy0 + 20, fx0, 2] > 200 and prev[fy0 + 20, fx0, 0] < 100  # blue: the other face
    assert prev[sy0 + 20, sx0, 1] > 150 and prev[sy0 + 20, sx0, 0] < 60  # green: the face used
    for x, y in crop.faces[1].landmarks:  # and its five landmarks as green dots
        px = prev[int(round(y)), int(round(x))]
        assert px[1] > 150 and px[0] < 60 and px[2] < 150


def test_detector_is_thread_safe_and_leaves_the_environment_alone():
    """One detector per thread: concurrent detection equals sequential, and os.environ is never written."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    images = [fp.photo("astronaut"), fp.two_faces()[0], fp.photo("coffee")] * 3
    before = dict(os.environ)
    expected = [faces.detect_faces(im) for im in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(faces.detect_faces, images))
    assert got == expected and [len(f) for f in expected[:3]] == [1, 2, 0]
    assert dict(os.environ) == before


def test_the_bundled_model_is_the_one_its_source_names():
    import hashlib
    import re

    source = (faces.MODEL_FILE.parent / "SOURCE.md").read_text()
    digest = re.search(r"sha256 `([0-9a-f]{64})`", source).group(1)
    assert hashlib.sha256(faces.MODEL_FILE.read_bytes()).hexdigest() == digest
    assert "Apache License" in (faces.MODEL_FILE.parent / "LICENSE").read_text()
    notice = (faces.MODEL_FILE.parents[3] / "NOTICE").read_text()
    assert "yunet_n_dynamic.onnx" in notice and "Apache License" in notice
