"""ONNX export (explorer.store.onnx_export) and the torch-free ONNX predictor (explorer.predict.onnx_runtime), demo backbone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from app_testdata import demo_backbone  # noqa: E402
from PIL import Image  # noqa: E402

from explorer.cli import main  # noqa: E402
from explorer.core.errors import ExplorerError  # noqa: E402
from explorer.data.images import open_image  # noqa: E402
from explorer.data.inputs import inputs_record  # noqa: E402
from explorer.methods.linear_probe import LinearConfig, LinearProbe  # noqa: E402
from explorer.predict.onnx_runtime import ONNX_META_KEY, SNIPPET, load_onnx, looks_like_onnx, preprocess_image  # noqa: E402
from explorer.store.checkpoints import load_checkpoint, save_checkpoint, update_metadata  # noqa: E402
from explorer.store.onnx_export import PROBE_IMAGES, export_onnx, preprocess_fields, probe_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ("ordinalclip-linear", "ordinalclip-inv_prop", "ordinalclip-normal", "coop", "zero-shot", "numclip")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone():
    return demo_backbone()  # the one shared demo backbone of the test process


@pytest.fixture(scope="module")
def exported(backbone, tmp_path_factory):
    """name -> (checkpoint, onnx path) for the bundled checkpoints and a linear probe."""
    folder = tmp_path_factory.mktemp("onnx")
    ckpts = {name: load_checkpoint(ROOT / "checkpoints" / f"{name}.safetensors") for name in BUNDLED}
    ranks = ckpts["ordinalclip-linear"].ranks
    probe = LinearProbe.build(backbone, LinearConfig(), ranks, seed=3)
    ckpts["linear"] = load_checkpoint(save_checkpoint(folder / "linear.safetensors", probe, backbone, name="linear"))
    return {name: (ck, export_onnx(ck, folder / f"{name}.onnx", backbone=backbone)) for name, ck in ckpts.items()}


def _images(folder: Path) -> list[Path]:
    rng = np.random.RandomState(0)
    paths = []
    for i, (w, h) in enumerate([(90, 130), (130, 90), (64, 64), (301, 257)]):
        path = folder / f"im{i}.png"
        Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("name", BUNDLED + ("linear",))
def test_same_pixels_same_answer(exported, backbone, name):
    ckpt, path = exported[name]
    pixels = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    pred = ckpt.predictor().predict(backbone.encode_images(pixels))
    probs, value = load_onnx(path).run(pixels.numpy())
    assert probs.shape == pred.probs.shape and value.shape == (5,)
    np.testing.assert_allclose(probs, pred.probs, atol=1e-4)
    np.testing.assert_allclose(value, pred.value, atol=1e-3)


def test_batch_axis_is_dynamic(exported):
    model = load_onnx(exported["ordinalclip-linear"][1])
    for n in (1, 7):
        probs, value = model.run(np.zeros((n, 3, 64, 64), np.float32))
        assert probs.shape[0] == n and value.shape == (n,)


@pytest.mark.parametrize("name", ["ordinalclip-normal", "numclip"])
def test_image_files_through_torch_free_preprocessing(exported, backbone, name, tmp_path):
    ckpt, path = exported[name]
    images = [open_image(p) for p in _images(tmp_path)]
    model = load_onnx(path)
    ours = np.stack([preprocess_image(im, model.meta) for im in images])
    theirs = torch.stack([backbone.preprocess(im) for im in images]).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    want = ckpt.predictor().predict(backbone.encode_images(images))
    got = model.predict(images)
    np.testing.assert_allclose(got.probs, want.probs, atol=1e-3)
    np.testing.assert_allclose(got.value, want.value, atol=1e-3)


def test_metadata_round_trips(exported, backbone):
    import onnx

    ckpt, path = exported["numclip"]
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}[ONNX_META_KEY])
    assert meta == load_onnx(path).meta
    assert meta["image_size"] == 64 and meta["interpolation"] == "bicubic"
    assert (meta["resize"], meta["crop"]) == ("shortest", "center")
    assert meta["labels"] == list(ckpt.classes.labels) and meta["values"] == list(map(float, ckpt.classes.value_array))
    assert meta["unit"] == ckpt.ranks.unit and meta["method"] == "numclip" and meta["estimate"] == "regressed"
    assert meta["backbone"] == {"spec": ckpt.backbone_spec, "id": ckpt.backbone_id}
    assert meta["checkpoint"]["content_hash"].startswith("sha256:")
    assert preprocess_fields(backbone.preprocess, 64)["mean"] == meta["mean"]
    assert load_onnx(exported["linear"][1]).meta["method"] == "linear-probe"
    assert load_onnx(exported["coop"][1]).meta["estimate"] == "expected"


def test_face_crop_margin_is_stored(backbone, tmp_path):
    src = shutil.copy(ROOT / "checkpoints" / "ordinalclip-linear.safetensors", tmp_path / "faces.safetensors")
    update_metadata(src, training={**(load_checkpoint(src).meta.get("training") or {}), "inputs": inputs_record(True, margin=0.3)})
    meta = load_onnx(export_onnx(load_checkpoint(src), tmp_path / "faces.onnx", backbone=backbone)).meta
    assert meta["inputs"] == {"faces": True, "cropped": True, "margin": 0.3}


def test_cli_export_and_predict_match(exported, tmp_path, capsys):
    ckpt_path = ROOT / "checkpoints" / "ordinalclip-inv_prop.safetensors"
    out = tmp_path / "cli.onnx"
    assert main(["export", str(ckpt_path), "--onnx", str(out)]) == 0
    image = str(_images(tmp_path)[0])
    capsys.readouterr()
    assert main(["predict", str(out), image, "--json", "--no-face"]) == 0
    onnx_rec = json.loads(capsys.readouterr().out)
    assert main(["predict", str(ckpt_path), image, "--json", "--no-face"]) == 0
    ckpt_rec = json.loads(capsys.readouterr().out)
    assert set(onnx_rec) == set(ckpt_rec)
    assert abs(onnx_rec["value"] - ckpt_rec["value"]) < 1e-3 and onnx_rec["estimate"] == ckpt_rec["estimate"]
    np.testing.assert_allclose(onnx_rec["probs"], ckpt_rec["probs"], atol=1e-3)


def test_the_session_runs_on_every_core_and_bf16_is_refused(exported, tmp_path, capsys):
    model = load_onnx(exported["coop"][1])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert model.session.get_session_options().intra_op_num_threads == cores
    capsys.readouterr()
    assert main(["predict", str(exported["coop"][1]), str(_images(tmp_path)[0]), "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --precision bf16 does not apply to an ONNX file")


def test_prototypes_only_export_still_works(tmp_path):
    out = tmp_path / "p.safetensors"
    assert main(["export", str(ROOT / "checkpoints" / "coop.safetensors"), "--prototypes-only", "--out", str(out)]) == 0
    assert load_checkpoint(out).content == "prototypes"


def test_predict_onnx_imports_no_torch(exported, tmp_path):
    image = _images(tmp_path)[0]
    code = ("import sys, json; from explorer.cli import main; "
            f"rc = main(['predict', {str(exported['numclip'][1])!r}, {str(image)!r}, '--json']); "
            "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"rc": 0, "torch": False}
    assert "value" in json.loads(lines[0])


def test_unwritable_export_path_writes_nothing(tmp_path, capsys):
    ckpt_path = ROOT / "checkpoints" / "coop.safetensors"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ExplorerError, match="Cannot write") as info:
        export_onnx(load_checkpoint(ckpt_path), blocker / "x.onnx")
    assert "\n" not in str(info.value)
    assert main(["export", str(ckpt_path), "--onnx", str(tmp_path / "a-file" / "y.onnx")]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_missing_backbone_is_one_sentence(tmp_path):
    src = shutil.copy(ROOT / "checkpoints" / "coop.safetensors", tmp_path / "orphan.safetensors")
    update_metadata(src, backbone={"spec": str(tmp_path / "gone.safetensors"), "id": "x@0"})
    with pytest.raises(ExplorerError, match="cannot be loaded") as info:
        export_onnx(load_checkpoint(src), tmp_path / "out.onnx")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out.onnx").exists() and not list(tmp_path.glob(".*.tmp"))


def test_corrupt_onnx_is_one_sentence(exported, tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(exported["coop"][1].read_bytes()[:5000])
    with pytest.raises(ExplorerError, match="not a readable ONNX model") as info:
        load_onnx(bad)
    assert "\n" not in str(info.value)
    image = str(_images(tmp_path)[0])
    assert main(["predict", str(bad), image]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_onnx_recognised_by_content(exported, tmp_path):
    unnamed = tmp_path / "model.bin"
    unnamed.write_bytes(exported["coop"][1].read_bytes())
    assert looks_like_onnx(unnamed) and looks_like_onnx(tmp_path / "x.onnx")
    assert not looks_like_onnx(ROOT / "checkpoints" / "coop.safetensors")
    assert load_onnx(unnamed).meta["method"] == "coop"  # the bundled file stores the old name "plain"


def test_quantized_export_is_smaller_and_runs(exported, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    capsys.readouterr()
    assert main(["export", str(ROOT / "checkpoints" / "coop.safetensors"), "--onnx", str(out), "--quantize", "int8"]) == 0
    said = capsys.readouterr().out.strip()
    assert out.stat().st_size < exported["coop"][1].stat().st_size
    assert said.startswith(f"wrote {out} (ONNX int8, {out.stat().st_size / 1e6:.1f} MB; fp32 would be ")
    assert "on average (max " in said and said.endswith(f"on {PROBE_IMAGES} probe images)")
    probs, value = load_onnx(out).run(np.zeros((2, 3, 64, 64), np.float32))
    assert probs.shape[0] == 2 and np.allclose(probs.sum(axis=1), 1, atol=1e-4)


def test_int8_cost_matches_an_independent_run(exported, backbone, tmp_path):
    ckpt, fp32_path = exported["ordinalclip-normal"]
    q = load_onnx(export_onnx(ckpt, tmp_path / "q.onnx", backbone=backbone, quantize="int8"))
    cost = q.meta["quantization"]
    fp32 = load_onnx(fp32_path)
    pixels = fp32.preprocess(probe_images(PROBE_IMAGES, cost["seed"]))
    change = np.abs(q.run(pixels)[1].astype(np.float64) - fp32.run(pixels)[1].astype(np.float64))
    assert cost["probe_images"] == PROBE_IMAGES == len(pixels)
    assert cost["fp32_bytes"] > (tmp_path / "q.onnx").stat().st_size
    np.testing.assert_allclose(cost["mean_abs_change"], change.mean(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cost["max_abs_change"], change.max(), rtol=1e-5, atol=1e-7)
    assert cost["max_abs_change"] > 0  # int8 weights do move the estimate
    assert "quantization" not in fp32.meta


def test_deploy_doc_shows_the_snippet_the_app_shows():
    assert SNIPPET in (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    compile(SNIPPET, "snippet", "exec")
