"""The ``ordinal-explorer`` command line (explorer/cli.py).

A few runs go through the installed console script in subprocesses (started together, in the
background, when the module's fixtures are set up) to prove the entry point, exit codes and
one-line errors; the rest call ``explorer.cli.main([...])`` in-process. Real parts only: the demo
backbone, checkpoints and images written to a temporary folder. Expected numbers are computed
independently (numpy softmax / brute-force ordinality) or read back from the checkpoint file.
"""

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
from app_testdata import demo_backbone
from PIL import Image

from explorer.analysis.geometry import ordinality, report_spans, similarity_matrix
from explorer.cli import main
from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.data.images import open_image
from explorer.methods import make_config
from explorer.methods.prompt import build_prompt_model
from explorer.store.checkpoints import load_checkpoint, save_checkpoint

AGES = Ranks.integers(20, start=16, unit="years")  # 16 .. 35






pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def demo():
    return demo_backbone()  # the test process's one demo backbone (only read here)


@pytest.fixture(scope="module")
def files(demo, tmp_path_factory):
    """Checkpoints and inputs on disk."""
    d = tmp_path_factory.mktemp("cli")
    out = {}
    rank = build_prompt_model(demo, make_config("ordinalclip", num_ranks=20, num_context_tokens=4), AGES, seed=0)
    out["rank"] = save_checkpoint(d / "ages.safetensors", rank, demo, training={"epochs": 5}, metrics={"mae_exp": 4.25})
    plain = build_prompt_model(demo, make_config("coop", num_ranks=20, num_context_tokens=2), AGES, seed=1)
    with torch.no_grad():  # spread the ranks apart so the geometry is not trivially ordered
        plain.learner.rank_embeds.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    out["plain"] = save_checkpoint(d / "plain.safetensors", plain, demo)
    rng = np.random.default_rng(0)
    out["png"] = d / "face.png"
    Image.fromarray(rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)).save(out["png"])
    out["jpg"] = d / "photo.jpg"
    Image.fromarray(np.full((40, 60, 3), (30, 120, 220), np.uint8)).save(out["jpg"], quality=90)
    out["text"] = d / "notes.png"
    out["text"].write_text("not an image at all\n")
    out["empty"] = d / "empty.jpg"
    out["empty"].write_bytes(b"")
    data = out["rank"].read_bytes()
    out["corrupt"] = d / "corrupt.safetensors"
    out["corrupt"].write_bytes(data[: len(data) // 3])
    out["pickle"] = d / "model.pt"
    torch.save({"prototypes": torch.zeros(20, 128)}, out["pickle"])
    out["missing"] = d / "missing.safetensors"
    return out


def cli(capsys, *args):
    """Run ``main`` in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _help(capsys, *args) -> str:
    with pytest.raises(SystemExit) as info:
        main([*args, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def native_bf16_here() -> bool:
    """Read apart from explorer.backbones.precision: an x86-64 Linux CPU with AVX512_BF16 or AMX-BF16."""
    import platform

    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def without_precision_line(err: str) -> str:
    """``err`` less the one line that says the precision (asserted: exactly one, right for this CPU)."""
    lines = err.splitlines(keepends=True)
    said = [line for line in lines if line.startswith("precision: ")]
    assert len(said) == 1, err
    if os.environ.get("ORDINAL_EXPLORER_PRECISION") == "fp32":  # the suite's pin of auto (conftest.py)
        assert said[0].strip() == "precision: fp32", said
    else:
        assert said[0].startswith("precision: bf16 (this CPU computes bf16 natively" if native_bf16_here()
                                  else "precision: fp32 (auto: this CPU has no native bf16)"), said
    return "".join(line for line in lines if line not in said)


def assert_one_error_line(rc, out, err):
    assert rc == 2
    assert out == ""
    if err.startswith("precision: "):  # said when the backbone loaded, before the images were read
        err = without_precision_line(err)
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


# --- the installed console script (subprocesses, started together) -----------------------------


class _Runs:
    def __init__(self, commands: dict[str, list[str]]):
        exe = Path(sys.executable).parent / "ordinal-explorer"
        exe = str(exe) if exe.exists() else shutil.which("ordinal-explorer")
        assert exe, "the ordinal-explorer console script is not installed"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.procs = {
            k: subprocess.Popen([exe, *map(str, v)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for k, v in commands.items()
        }
        self.results: dict[str, tuple[int, str, str]] = {}

    def __getitem__(self, key):
        if key not in self.results:
            out, err = self.procs[key].communicate(timeout=120)
            self.results[key] = (self.procs[key].returncode, out, err)
        return self.results[key]

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.fixture(scope="module")
def runs(files):
    r = _Runs({
        "predict": ["predict", files["rank"], files["png"], files["jpg"], "--json"],
        "missing": ["info", files["missing"]],
        "debug": ["--debug", "info", files["corrupt"]],
    })
    yield r
    r.close()


@pytest.mark.slow
def test_console_script_predict_json(runs, files, capsys):
    rc, out, err = runs["predict"]
    assert rc == 0, err
    assert "Traceback" not in err
    records = json.loads(out)
    assert isinstance(records, list) and [r["image"] for r in records] == [str(files["png"]), str(files["jpg"])]
    rc2, out2, _ = cli(capsys, "predict", files["rank"], files["png"], files["jpg"], "--json")
    assert rc2 == 0
    for a, b in zip(records, json.loads(out2)):  # the installed script computes what main() computes
        assert a["argmax"] == b["argmax"] and a["interval"] == b["interval"]
        assert a["expected_value"] == pytest.approx(b["expected_value"], abs=1e-5)


@pytest.mark.slow
def test_console_script_error_is_one_line(runs, files):
    rc, out, err = runs["missing"]
    line = assert_one_error_line(rc, out, err)
    assert line == f"error: Checkpoint not found: {files['missing']}."


@pytest.mark.slow
def test_console_script_debug_shows_the_traceback(runs):
    rc, out, err = runs["debug"]
    assert rc != 0 and out == ""
    assert "Traceback (most recent call last)" in err
    assert "explorer.core.errors.ExplorerError: corrupt.safetensors is not a readable safetensors file" in err


# --- help ---------------------------------------------------------------------------------------


def test_top_level_help(capsys):
    out = _help(capsys)
    assert out.startswith("usage: ordinal-explorer")
    for name in ("info", "prototypes", "analyze", "predict", "export", "import-reference", "--debug"):
        assert name in out


@pytest.mark.parametrize("command,options", [
    ("info", ["checkpoint", "--json"]),
    ("prototypes", ["checkpoint", "--out", "--repeat", "--full-length", "--stored", "--backbone", "--device"]),
    ("analyze", ["checkpoint", "--window", "--json"]),
    ("predict", ["checkpoint", "IMAGE", "--top", "--coverage", "--json", "--backbone", "--device"]),
    ("export", ["checkpoint", "--prototypes-only", "--out"]),
    ("import-reference", ["--run-dir", "--ckpt", "--clip-weights", "--out", "--learner", "--num-ranks",
                          "--num-base-ranks", "--interpolation", "--position", "--rank-specific-context"]),
])
def test_subcommand_help(capsys, command, options):
    out = _help(capsys, command)
    assert out.startswith(f"usage: ordinal-explorer {command}")
    for option in options:
        assert option in out, option


# --- info ---------------------------------------------------------------------------------------


def test_info_text_and_json(capsys, files, demo):
    rc, out, err = cli(capsys, "info", files["rank"])
    assert rc == 0 and err == ""
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in out.splitlines()}
    assert fields["content"] == "full" and fields["method"] == "ordinalclip" and fields["num_ranks"] == "20"
    assert fields["ranks"] == "16 .. 35 years" and fields["format_version"] == "1"
    assert demo.backbone_id in fields["backbone"] and "spec=demo" in fields["backbone"]
    assert fields["metrics"] == "mae_exp=4.25"

    rc, out, err = cli(capsys, "info", files["rank"], "--json")
    assert rc == 0 and len(out.strip().splitlines()) == 1
    info = json.loads(out)
    assert info["name"] == "ages" and info["content"] == "full" and info["num_ranks"] == 20
    assert info["backbone"] == {"spec": "demo", "id": demo.backbone_id}
    assert info["embed_dim"] == 128 and info["num_base_ranks"] == 3 and info["num_context_tokens"] == 4
    assert info["tensors"] == {"learner.context_embeds": [4, 128], "learner.rank_embeds": [3, 1, 128],
                               "prototypes": [20, 128]}
    assert info["training"] == {"epochs": 5} and info["metrics"] == {"mae_exp": 4.25}
    assert info["logit_scale"] == pytest.approx(100.0, rel=1e-3)


# --- prototypes ---------------------------------------------------------------------------------


def test_prototypes_out_full_length_and_stored(capsys, files, tmp_path):
    stored = load_checkpoint(files["rank"]).tensors["prototypes"].numpy()
    results = {}
    for label, extra in {"computed": [], "full": ["--full-length"], "stored": ["--stored"]}.items():
        path = tmp_path / f"{label}.npy"
        rc, out, err = cli(capsys, "prototypes", files["rank"], "--out", path, *extra)
        assert rc == 0 and err == ""
        assert out.strip() == f"wrote {path}: 20 x 128 float32 prototypes"
        arr = np.load(path)
        assert arr.dtype == np.float32 and arr.shape == (20, 128)
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(arr, stored, atol=1e-5)
        results[label] = arr
    np.testing.assert_allclose(results["full"], results["computed"], atol=1e-5)  # padding to 77 changes nothing
    np.testing.assert_allclose(results["stored"], stored, atol=1e-6)


def test_prototypes_repeat_prints_one_json_line(capsys, files, tmp_path):
    rc, out, err = cli(capsys, "prototypes", files["plain"], "--repeat", "3", "--out", tmp_path / "p.npy")
    assert rc == 0 and err == ""
    lines = out.strip().splitlines()
    assert len(lines) == 1
    timing = json.loads(lines[0])
    assert timing["median_seconds"] > 0 and timing["repeats"] == 3
    assert timing["shape"] == [20, 128] and timing["full_length"] is False and timing["device"] == "cpu"
    assert timing["text_path"] == "shared"  # the shared-prefix path for truncated prompts with a shared context
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), load_checkpoint(files["plain"]).tensors["prototypes"].numpy(), atol=1e-5)


def test_prototypes_of_a_prototype_only_file_need_stored(capsys, files, tmp_path):
    exported = tmp_path / "protos.safetensors"
    assert cli(capsys, "export", files["rank"], "--prototypes-only", "--out", exported)[0] == 0
    line = assert_one_error_line(*cli(capsys, "prototypes", exported, "--out", tmp_path / "x.npy"))
    assert "holds prototypes only" in line
    rc, _, _ = cli(capsys, "prototypes", exported, "--stored", "--out", tmp_path / "x.npy")
    assert rc == 0
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), load_checkpoint(files["rank"]).tensors["prototypes"].numpy(), atol=1e-6)


# --- analyze ------------------------------------------------------------------------------------


def _brute_ordinality(P: np.ndarray, span: int | None = None) -> float:
    """The method's definition, by loops: C[i, j] = S[i, j] > S[i, j + 1] for i <= j < min(i + s, m)."""
    P = P.astype(np.float64)
    P = P / np.linalg.norm(P, axis=1, keepdims=True)
    S = P @ P.T
    m = len(P) - 1
    s = m if span is None else span
    good = total = 0
    for i in range(m):
        for j in range(i, min(i + s, m)):
            total += 1
            good += bool(S[i, j] > S[i, j + 1])
    return good / total


@pytest.mark.parametrize("window,lo,hi", [(None, 0, 19), ("20:30", 4, 14), ("17.5:35", 2, 19), ("0:100", 0, 19)])
def test_analyze_json(capsys, files, window, lo, hi):
    args = ["analyze", files["plain"], "--json"] + (["--window", window] if window else [])
    rc, out, err = cli(capsys, *args)
    assert rc == 0 and err == ""
    rep = json.loads(out)
    P = load_checkpoint(files["plain"]).tensors["prototypes"].numpy()[lo : hi + 1]
    n = hi - lo + 1
    assert rep["num_prototypes"] == n and rep["num_ranks"] == 20
    assert 0 <= rep["ordinality"] <= 1
    assert rep["violation_rate"] == pytest.approx(1 - rep["ordinality"], abs=1e-12)
    assert rep["ordinality"] == pytest.approx(_brute_ordinality(P), abs=1e-12)
    assert rep["ordinality"] == pytest.approx(ordinality(similarity_matrix(P)), abs=1e-12)
    assert 0 < rep["ordinality"] < 1  # the spread-out plain prototypes are neither ordered nor reversed
    assert rep["num_pairs"] == (n - 1) * n // 2
    assert list(rep["spans"]) == [str(s) for s in report_spans(n - 1)]
    for s, value in rep["spans"].items():
        assert value == pytest.approx(_brute_ordinality(P, int(s)), abs=1e-12)
    assert rep["spans"][str(n - 1)] == pytest.approx(rep["ordinality"])
    if window and lo > 0:
        assert rep["window"] == {"ranks": [lo, hi], "labels": [str(16 + lo), str(16 + hi)]}
    adj = rep["adjacent_similarity"]
    assert len(adj) == n - 1 and adj[0]["from"] == str(16 + lo) and adj[-1]["to"] == str(16 + hi)
    Pn = P / np.linalg.norm(P, axis=1, keepdims=True)
    np.testing.assert_allclose([a["cosine"] for a in adj], np.sum(Pn[:-1] * Pn[1:], axis=1), atol=1e-6)


def test_analyze_text(capsys, files):
    rc, out, err = cli(capsys, "analyze", files["plain"], "--window", "20:30")
    assert rc == 0 and err == ""
    assert out.startswith("plain: 20 ranks, window 20..30")
    assert "ordinality (all pairs):" in out and "violation rate:" in out and "s=10:" in out


@pytest.mark.parametrize("window,pattern", [("20-30", "must look like A:B"), ("16:17", "holds 2 ranks"), ("40:50", "holds 0 ranks")])
def test_analyze_bad_window(capsys, files, window, pattern):
    line = assert_one_error_line(*cli(capsys, "analyze", files["plain"], "--window", window))
    assert pattern in line


# --- predict ------------------------------------------------------------------------------------


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_predict_json_one_and_two_images(capsys, files, demo):
    rc, out, err = cli(capsys, "predict", files["rank"], files["png"], "--json", "--top", "5")
    assert rc == 0 and without_precision_line(err) == ""
    rec = json.loads(out)
    assert isinstance(rec, dict) and rec["image"] == str(files["png"])

    # independent: image features from the backbone, then numpy
    ckpt = load_checkpoint(files["rank"])
    P = ckpt.tensors["prototypes"].numpy().astype(np.float64)
    f = demo.encode_images([open_image(files["png"])]).numpy().astype(np.float64)
    p = _softmax(ckpt.meta["logit_scale"] * (f / np.linalg.norm(f)) @ (P / np.linalg.norm(P, axis=1, keepdims=True)).T)[0]
    values = np.arange(16, 36, dtype=np.float64)
    assert rec["expected_value"] == pytest.approx(p @ values, abs=1e-4)
    assert rec["expected_rank"] == pytest.approx(p @ np.arange(20), abs=1e-4)
    assert rec["argmax"] == int(np.argmax(p)) and rec["argmax_label"] == str(16 + rec["argmax"])
    assert rec["median"] == int(np.searchsorted(np.cumsum(p), 0.5))
    assert rec["median_value"] == 16 + rec["median"]
    assert 16 <= rec["expected_value"] <= 35 and rec["unit"] == "years" and rec["coverage"] == 0.9
    lo, hi = rec["interval"]
    assert 0 <= lo <= rec["median"] <= hi <= 19 and rec["interval_values"] == [16 + lo, 16 + hi]
    probs = [t["prob"] for t in rec["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)
    assert [t["rank"] for t in rec["top"]] == list(np.argsort(-p, kind="stable")[:5])
    np.testing.assert_allclose(probs, np.sort(p)[::-1][:5], atol=1e-6)

    rc, out, err = cli(capsys, "predict", files["rank"], files["png"], files["jpg"], "--json", "--coverage", "0.5")
    assert rc == 0
    recs = json.loads(out)
    assert isinstance(recs, list) and len(recs) == 2
    assert [r["image"] for r in recs] == [str(files["png"]), str(files["jpg"])]
    assert recs[0]["expected_value"] == pytest.approx(rec["expected_value"], abs=1e-4)  # batched: float noise
    for r in recs:
        assert 16 <= r["expected_value"] <= 35 and r["coverage"] == 0.5 and len(r["top"]) == 3
        assert r["top"][0]["prob"] >= r["top"][1]["prob"] >= r["top"][2]["prob"]


def test_predict_face_json(capsys, files, demo, tmp_path):
    import face_photos as fp

    from explorer.data.faces import crop_face

    portrait = tmp_path / "astronaut.jpg"
    fp.photo("astronaut").save(portrait, quality=92)
    rc, out, err = cli(capsys, "predict", files["rank"], portrait, files["jpg"], "--face", "--json")
    assert rc == 0 and without_precision_line(err) == ""
    face_rec, plain_rec = json.loads(out)
    assert set(face_rec["face"]) == {"found", "box", "score"}
    assert face_rec["face"]["found"] is True and 0.7 <= face_rec["face"]["score"] <= 1
    x0, y0, x1, y1 = face_rec["face"]["box"]
    assert 150 <= x0 < x1 <= 300 and 30 <= y0 < y1 <= 220  # the astronaut's face, original pixels
    assert plain_rec["face"] == {"found": False, "box": None, "score": None}  # whole image used
    # the crop is what is encoded: same numbers as predicting the app's crop directly
    crop = crop_face(open_image(portrait))
    assert list(crop.face_box) == face_rec["face"]["box"]
    direct = load_checkpoint(files["rank"]).prototypes.predict(demo.encode_images([crop.image]))
    assert face_rec["expected_value"] == pytest.approx(direct.record(0)["expected_value"], abs=1e-4)
    whole = json.loads(cli(capsys, "predict", files["rank"], portrait, "--json")[1])
    assert "face" not in whole and whole["expected_value"] != pytest.approx(face_rec["expected_value"], abs=1e-6)
    rc, out, _ = cli(capsys, "predict", files["rank"], portrait, "--face")
    assert rc == 0 and f"; face [{x0}, {y0}, {x1}, {y1}] (score " in out


def test_predict_text(capsys, files):
    rc, out, err = cli(capsys, "predict", files["rank"], files["png"], files["jpg"])
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{files['png']}: expected ") and " years, argmax " in lines[0]
    assert "90% interval [" in lines[1] and "top: " in lines[1]
    assert "demo backbone" in err


def test_export_prototypes_only_predicts_the_same(capsys, files, tmp_path):
    out_file = tmp_path / "exported.safetensors"
    rc, out, err = cli(capsys, "export", files["rank"], "--prototypes-only", "--out", out_file)
    assert rc == 0 and out.startswith(f"wrote {out_file} (prototypes only, 20 ranks)")
    info = json.loads(cli(capsys, "info", out_file, "--json")[1])
    assert info["content"] == "prototypes" and list(info["tensors"]) == ["prototypes"] and info["method"] == "ordinalclip"

    imgs = [files["png"], files["jpg"]]
    full = json.loads(cli(capsys, "predict", files["rank"], *imgs, "--json")[1])
    exported = json.loads(cli(capsys, "predict", out_file, *imgs, "--json")[1])
    for a, b in zip(full, exported):
        assert a.keys() == b.keys()
        for key in a:
            if key in ("expected_rank", "expected_value", "value"):  # stored vs recomputed prototypes: float noise
                assert a[key] == pytest.approx(b[key], abs=1e-5)
            elif key == "probs":
                np.testing.assert_allclose(a[key], b[key], atol=1e-6)
            elif key == "top":
                assert [t["rank"] for t in a[key]] == [t["rank"] for t in b[key]]
                np.testing.assert_allclose([t["prob"] for t in a[key]], [t["prob"] for t in b[key]], atol=1e-6)
            else:
                assert a[key] == b[key], key


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case,pattern", [
    ("missing-ckpt", "Checkpoint not found"),
    ("corrupt-ckpt", "corrupt.safetensors is not a readable safetensors file"),
    ("pickle-ckpt", "model.pt is a torch pickle"),
    ("non-image", "notes.png is not an image"),
    ("empty-image", "empty.jpg is empty (0 bytes)"),
    ("missing-image", "Image not found"),
])
def test_errors_exit_2_with_one_line(capsys, files, case, pattern):
    args = {
        "missing-ckpt": ["predict", files["missing"], files["png"]],
        "corrupt-ckpt": ["predict", files["corrupt"], files["png"]],
        "pickle-ckpt": ["info", files["pickle"]],
        "non-image": ["predict", files["rank"], files["text"]],
        "empty-image": ["predict", files["rank"], files["png"], files["empty"]],
        "missing-image": ["predict", files["rank"], files["missing"].with_suffix(".png")],
    }[case]
    line = assert_one_error_line(*cli(capsys, *args))
    assert pattern in line


def test_another_backbone_is_refused(capsys, files, demo, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.detach().float().contiguous() for k, v in demo.model.state_dict().items() if k != "attn_mask"}
    state["ln_final.bias"] = state["ln_final.bias"] + 0.01
    weights = tmp_path / "other.safetensors"
    save_file(state, str(weights))
    line = assert_one_error_line(*cli(capsys, "predict", files["rank"], files["png"], "--backbone", f"ordinalclip-demo@{weights}"))
    assert demo.backbone_id in line and "load that backbone instead" in line


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_raises_the_error(capsys, files, where):
    args = ["info", str(files["corrupt"])]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    with pytest.raises(ExplorerError, match="not a readable safetensors file"):
        main(args)
