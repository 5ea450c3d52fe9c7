"""Datasets of whole photos cropped like Predict (--faces): same crop, own cache keys, counted misses,
recorded in the checkpoint, and eval --faces scoring exactly what predict --face returns."""

from __future__ import annotations

import json

import face_photos as fp
import numpy as np
import pytest
from app_testdata import demo_backbone

from explorer import cli
from explorer.data import faces
from explorer.data.datasets import open_dataset
from explorer.data.features import FeatureCache, content_key
from explorer.data.inputs import checkpoint_inputs, crops_faces
from explorer.predict.uploads import prepare_upload
from explorer.store.checkpoints import load_checkpoint

FACE_LABELS = fp.SCENE_FACE_LABELS
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """csv dataset: 6 scenes with a face, 2 photos without one (coffee, rocket), labels 2..9."""
    root = tmp_path_factory.mktemp("scenes")
    fp.write_scene_dataset(root)
    return root


def test_dataset_crop_is_predicts_crop(scenes):
    dataset = open_dataset(f"csv:{scenes / 'data.csv'}")
    dataset.face_margin = faces.DEFAULT_MARGIN
    for sample in dataset.samples:
        image, found = dataset.model_input(sample)
        upload = prepare_upload(dataset.image_path(sample).read_bytes(), sample.path)
        assert found == upload.crop.found == sample.path.startswith("face")
        assert image.size == upload.crop.image.size
        assert np.array_equal(np.asarray(image), np.asarray(upload.crop.image))
    whole = open_dataset(f"csv:{scenes / 'data.csv'}")
    assert whole.model_input(whole.samples[0]) [1] is None
    assert whole.model_image(whole.samples[0]).size == (480, 360)


def test_cache_keys_differ_and_misses_are_counted(scenes, tmp_path):
    dataset = open_dataset(f"csv:{scenes / 'data.csv'}")
    keys_whole = [content_key(dataset, s) for s in dataset.samples]
    dataset.face_margin = faces.DEFAULT_MARGIN
    keys_faces = [content_key(dataset, s) for s in dataset.samples]
    assert not set(keys_whole) & set(keys_faces)
    cache = FeatureCache(demo_backbone(), tmp_path / "cache")
    cropped = cache.features(dataset, dataset.samples)
    assert cache.last_faces == [True] * 6 + [False] * 2
    assert faces.faces_sentence(cache.last_faces) == "faces found in 6 of 8 images; 2 used whole"
    again = FeatureCache(demo_backbone(), tmp_path / "cache")  # a fresh process: flags come from the chunks
    assert np.allclose(again.features(dataset, dataset.samples), cropped) and again.last_faces == cache.last_faces
    dataset.face_margin = None
    whole = again.features(dataset, dataset.samples)
    assert again.last_faces == [None] * 8 and len(again) == 16
    assert not np.allclose(whole[:6], cropped[:6]) and np.allclose(whole[6:], cropped[6:], atol=1e-6)


def test_embed_cli_says_how_many_faces_were_found(scenes, tmp_path, capsys):
    args = ["embed", f"csv:{scenes / 'data.csv'}", "--faces", "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert cli.main(args) == 0
    assert "(faces found in 6 of 8 images; 2 used whole)" in capsys.readouterr().out


@pytest.mark.slow
def test_train_eval_predict_with_faces(scenes, tmp_path, capsys):
    out = tmp_path / "faces.safetensors"
    data = f"csv:{scenes / 'data.csv'}"
    assert cli.main(["train", data, "--faces", "--out", str(out), "--method", "ordinalclip", "--epochs", "2",
                     "--context-tokens", "2",
                     "--cache-dir", str(tmp_path / "c"), "--quiet", "--json"]) == 0
    capsys.readouterr()
    ckpt = load_checkpoint(out)
    record = checkpoint_inputs(ckpt.meta)
    assert record["faces"] and record["cropped"] and record["margin"] == faces.DEFAULT_MARGIN
    assert crops_faces(ckpt.meta) and checkpoint_inputs(ckpt.meta)["cropped"]  # eval crops exactly such runs by default
    assert sum(v["images"] for v in ckpt.meta["training"]["data"]["faces"].values()) >= 4
    assert cli.main(["info", str(out)]) == 0 and "faces (trained on face crops (--faces), margin 0.4)" in capsys.readouterr().out

    assert cli.main(["eval", str(out), data, "--split", "all", "--json", "--cache-dir", str(tmp_path / "c")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["faces"] == {"found": 6, "images": 8}
    images = [str(scenes / f"face{i}.png") for i in range(6)] + [str(scenes / "coffee.jpg"), str(scenes / "rocket.jpg")]
    assert cli.main(["predict", str(out), *images, "--json"]) == 0  # crops by default: a face checkpoint
    records = json.loads(capsys.readouterr().out)
    assert [r["face"]["found"] for r in records] == [True] * 6 + [False] * 2
    labels = np.array(FACE_LABELS + [7, 9], dtype=float)
    values = np.array([r["value"] for r in records])
    assert result["metrics"]["mae_value"] == pytest.approx(np.abs(values - labels).mean(), abs=1e-5)

    assert cli.main(["eval", str(out), data, "--split", "all", "--json", "--no-faces", "--cache-dir", str(tmp_path / "c")]) == 0
    assert json.loads(capsys.readouterr().out)["faces"] is None
    assert cli.main(["predict", str(out), images[0], "--no-face", "--json"]) == 0
    assert "face" not in json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_whole_image_checkpoints_are_not_cropped_by_default(tmp_path, capsys):
    from explorer.core.settings import REPO_ROOT

    demo = REPO_ROOT / "checkpoints" / "ordinalclip-linear.safetensors"  # dots: whole images
    meta = load_checkpoint(demo).meta
    assert not crops_faces(meta) and not checkpoint_inputs(meta)["cropped"]
    image = tmp_path / "a.png"
    fp.face_scene(0).save(image)
    assert cli.main(["predict", str(demo), str(image), "--json"]) == 0
    assert "face" not in json.loads(capsys.readouterr().out)
    assert cli.main(["predict", str(demo), str(image), "--face", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["face"]["found"]


@pytest.mark.parametrize("meta, kind", [
    ({"preset": "age"}, "faces"), ({"preset": "aesthetics"}, "whole"),
    ({"source": {"preset": "age-groups"}}, "faces"),
    ({"training": {"dataset": "utkface:/data/UTKFace"}}, "faces"), ({"training": {"dataset": "dots:20"}}, "whole"),
    ({"training": {"dataset": "csv:x.csv", "preset": "morph"}}, "faces"),
    ({"training": {"dataset": "csv:x.csv", "faces": True, "face_margin": 0.25}}, "faces"),
    ({"training": {"dataset": "csv:x.csv", "faces": True, "inputs": {"kind": "faces", "cropped": True, "margin": 0.3, "why": "x"}}},
     "faces"),  # the stored record of earlier versions
])
def test_inputs_are_read_from_old_metadata(meta, kind):
    record = checkpoint_inputs(meta)
    assert record["faces"] == (kind == "faces")
    assert record["cropped"] == bool((meta.get("training") or {}).get("faces"))


@pytest.mark.slow
def test_corrupt_images_get_their_sentence_with_faces(scenes, tmp_path, capsys):
    root = tmp_path / "bad"
    root.mkdir()
    for name in ("face0.png", "face1.png", "coffee.jpg"):
        (root / name).write_bytes((scenes / name).read_bytes())
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "data.csv").write_text("path,label\nface0.png,2\nface1.png,4\ncoffee.jpg,7\nbroken.png,5\n")
    args = ["embed", f"csv:{root / 'data.csv'}", "--faces", "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert cli.main(args) != 0
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err
    assert cli.main(args + ["--skip-bad"]) == 0
    assert "3 images embedded" in capsys.readouterr().out
