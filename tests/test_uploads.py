"""explorer.predict.uploads: uploaded bytes to rank distributions (decode with EXIF, modes and limits,
crop the face, encode in one batch, predict), and one image through several checkpoints."""

from __future__ import annotations

import io
from contextlib import contextmanager

import face_photos as fp
import numpy as np
import pandas as pd
import pytest
from app_testdata import build, demo_backbone, face_image, image_bytes, plain_image
from PIL import Image

from explorer.predict import uploads


@contextmanager
def image_tower_calls(backbone):
    """Counts the image tower's forward passes inside the block."""
    calls = []
    hook = backbone.model.visual.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        yield calls
    finally:
        hook.remove()


def test_exif_rotation_is_honoured_before_detection():
    upright = face_image()
    sideways = upright.rotate(90, expand=True)  # stored rotated; EXIF 6 says "rotate 90 CW to display"
    exif = Image.Exif()
    exif[0x0112] = 6
    data = image_bytes(sideways, "JPEG", exif=exif, quality=95)
    item = uploads.prepare_upload(data, "phone.jpg")
    assert item.ok and item.image.size == (400, 300)
    assert item.crop.found


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("RGB", "WEBP"), ("RGB", "BMP"), ("RGB", "TIFF"), ("P", "PNG")])
def test_modes_and_formats(mode, fmt):
    img = face_image().convert(mode)
    item = uploads.prepare_upload(image_bytes(img, fmt), f"x.{fmt.lower()}")
    assert item.ok, item.error
    assert item.image.mode == "RGB"


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"hello, I am text", "not an image"),
    (image_bytes(face_image())[:200], "could not be decoded"),
])
def test_bad_uploads_get_friendly_errors(data, words):
    item = uploads.prepare_upload(data, "upload.png")
    assert not item.ok and words in item.error and "upload.png" in item.error


def test_pixel_limit():
    item = uploads.prepare_upload(image_bytes(face_image()), "big.png", max_pixels=1000)
    assert not item.ok and "pixels" in item.error and "limit" in item.error


@pytest.fixture(scope="module")
def protos():
    from explorer.core.ranks import Ranks

    return build("ordinalclip", ranks=Ranks.integers(101, unit="years"), seed=7).prototypes()


def test_predict_uploads_end_to_end(protos):
    items = uploads.prepare_uploads([("face.png", image_bytes(face_image())), ("notes.png", b"text"),
                                     ("grass.jpg", image_bytes(plain_image(), "JPEG"))])
    with image_tower_calls(demo_backbone()) as calls:
        result = uploads.predict_uploads(items, protos, demo_backbone())
    assert calls == [2]  # the two usable images, in one batch
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
    items = uploads.prepare_uploads([("face.png", image_bytes(face_image()))], use_whole_image=True)
    result = uploads.predict_uploads(items, protos, demo_backbone())
    assert result.items[0].crop.whole_image_requested
    with image_tower_calls(demo_backbone()) as calls:
        bad = uploads.predict_uploads(uploads.prepare_uploads([("a.png", b"")]), protos, demo_backbone())
    assert calls == [] and bad.prediction is None and len(bad.errors) == 1 and list(bad.table().columns) == ["image", "error"]


def test_overlay_distributions_encodes_once(protos):
    other = build("coop", ranks=protos.ranks, seed=3).prototypes()
    with image_tower_calls(demo_backbone()) as calls:
        out = uploads.overlay_distributions(face_image(), [("a", protos), ("b", other)], demo_backbone())
    assert calls == [1] and [key for key, _ in out] == ["a", "b"]
    feats = demo_backbone().encode_images([face_image()])
    for (_, prediction), predictor in zip(out, (protos, other)):
        np.testing.assert_allclose(prediction.probs, predictor.predict(feats).probs, atol=1e-6)
    assert not np.allclose(out[0][1].probs, out[1][1].probs)


def test_predict_uploads_face_choices(protos):
    image, _ = fp.two_faces()
    data = image_bytes(image, "JPEG", quality=92)
    pair = [("two.jpg", data), ("two-again.jpg", data)]
    result = uploads.predict_uploads(uploads.prepare_uploads(pair, face_choices={1: 1}), protos, demo_backbone())
    first, second = (it.crop for it in result.items)
    assert first.face_index == 0 and second.face_index == 1 and first.num_faces == second.num_faces == 2
    assert not np.allclose(result.probs(0), result.probs(1))
    direct = protos.predict(demo_backbone().encode_images([second.image]))
    np.testing.assert_allclose(result.probs(1), direct.probs[0], atol=1e-5)
    assert list(result.table()["faces found"]) == [2, 2]
