"""explorer.store.library: scanning a checkpoint folder (good and bad files), uploads, metrics, analyses, projection cache."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from app_testdata import BAD, GOOD, make_library, scan_folder

from explorer.analysis import geometry, projections
from explorer.backbones import catalog, torchfiles
from explorer.core import settings
from explorer.core.errors import ExplorerError
from explorer.store import library as lib

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("library")
    make_library(path)
    return path


@pytest.fixture(scope="module")
def entries(folder) -> dict[str, lib.LibraryEntry]:
    return {e.path.stem: e for e in scan_folder(folder)}


def test_scan_lists_every_candidate_file(folder, entries):
    assert set(entries) == set(GOOD) | set(BAD)
    (folder / "readme.txt").write_text("not listed")
    try:
        assert "readme" not in {e.path.stem for e in scan_folder(folder)}
    finally:
        (folder / "readme.txt").unlink()


def test_good_checkpoints_are_described(entries):
    for name in GOOD:
        e = entries[name]
        assert e.ok, (name, e.message)
        assert len(e.content_hash) == 16
        assert e.backbone_spec == "demo" and e.backbone_ok is True
        assert 0.0 <= e.ordinality <= 1.0 and e.violation_rate == pytest.approx(1 - e.ordinality)
    assert entries["ages-rank-normal"].num_ranks == 101
    assert entries["dots-plain"].method == "coop"
    assert entries["ages-prototypes"].method == "ordinalclip (prototypes)"
    row = entries["dots-rank-linear"].row()
    assert row["interpolation"] == "linear (B=3)"
    assert row["ranks"] == 21 and row["range"] == "0 .. 20 dots"
    assert row["MAE"] == pytest.approx(2.1) and row["metrics on"] == "test"
    assert row["status"] == "ok"
    assert entries["ages-prototypes"].row()["interpolation"] == ""


def test_ordinality_matches_geometry(entries):
    from explorer.store.checkpoints import load_checkpoint

    e = entries["ages-rank-normal"]
    report = geometry.ordinality_report(load_checkpoint(e.path).prototypes.matrix.numpy())
    assert e.ordinality == pytest.approx(report["ordinality"])


@pytest.mark.parametrize("name, status, words", [
    ("corrupt", "error", "not a safetensors file"),
    ("truncated", "error", "truncated"),
    ("empty", "error", "empty (0 bytes)"),
    ("evil", "error", "os.system"),
    ("backbone-weights", "not_checkpoint", "backbone weights"),
    ("lightning", "not_checkpoint", "pickles are never loaded"),
])
def test_bad_files_get_one_clear_sentence(entries, name, status, words):
    e = entries[name]
    assert e.status == status
    assert words in e.message
    assert "\n" not in e.message and "Traceback" not in e.message
    assert e.row()["note"] == e.message


def test_missing_backbone_is_flagged(entries):
    e = entries["lost-backbone"]
    assert e.ok and e.backbone_ok is False
    assert "not found" in e.backbone_note
    assert e.row()["status"] == "backbone missing"


def test_repo_demo_backbone_weights_are_not_a_checkpoint():
    demo = REPO / "checkpoints" / "demo-backbone.safetensors"
    if not demo.is_file():
        pytest.skip("demo backbone weights not built")
    e = lib.inspect_entry(Path(demo))[0]
    assert e.status == "not_checkpoint" and "not an explorer checkpoint" in e.message


def test_a_malicious_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    evil = tmp_path / "model.ckpt"
    evil.write_bytes(pickle.dumps(Payload()))
    e = lib.inspect_entry(Path(evil))[0]
    assert e.status == "error" and "os.mkdir" in e.message and "could run code" in e.message
    assert not marker.exists()


def test_torch_zip_pickle_globals_are_read_without_unpickling(folder):
    found = torchfiles.pickle_globals(folder / "lightning.ckpt")
    assert found and all(g.startswith(torchfiles.SAFE_PICKLE_PREFIXES) for g in found)
    assert "os.system" in torchfiles.pickle_globals(folder / "evil.pt")


def test_inspect_never_raises_on_odd_paths(tmp_path):
    (tmp_path / "dir.safetensors").mkdir()
    assert lib.inspect_entry(Path(tmp_path / "dir.safetensors"))[0].status == "error"
    assert lib.inspect_entry(Path(tmp_path / "missing.safetensors"))[0].status == "error"
    assert scan_folder(tmp_path / "nope") == []


def test_metrics_helpers():
    nested = {"val": {"mae_exp": 2.0, "per_rank_mae": [1.0, None]}, "test": {"mae_exp": 3.0, "acc_max": 0.5, "per_rank_mae": [2.0, 1.0]}}
    assert lib.key_metrics(nested) == {"split": "test", "mae_exp": 3.0, "acc_max": 0.5}
    assert lib.per_rank_mae(nested) == ("test", [2.0, 1.0])
    only_val = {"val": {"mae_exp": 2.0, "per_rank_mae": [1.0, None]}, "test": None}
    assert lib.key_metrics(only_val)["split"] == "val"
    assert lib.per_rank_mae(only_val) == ("val", [1.0, None])
    flat = {"mae_exp": 1.5, "n": 3, "per_rank_mae": [0.5]}
    assert lib.key_metrics(flat) == {"split": "", "mae_exp": 1.5, "n": 3.0}
    assert lib.per_rank_mae(flat) == ("", [0.5])
    for empty in (None, {}, {"val": None}, {"note": "x"}):
        assert lib.key_metrics(empty) == {} and lib.per_rank_mae(empty) is None
    assert lib.per_rank_mae({"mae_exp": 1.0}) is None


def test_store_upload(tmp_path):
    a = lib.store_upload(b"abc", "../../we ird name.safetensors", tmp_path)
    assert a.parent.parent == tmp_path and a.name == "we_ird_name.safetensors"
    assert a.read_bytes() == b"abc"
    assert lib.store_upload(b"abc", "../../we ird name.safetensors", tmp_path) == a
    assert lib.store_upload(b"abd", "x.safetensors", tmp_path).parent != a.parent
    with pytest.raises(ExplorerError, match="empty"):
        lib.store_upload(b"", "x.safetensors", tmp_path)


def test_folders_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(settings.ENV_FOLDER, str(tmp_path))
    monkeypatch.setenv(settings.ENV_CACHE, "rel-cache")
    assert settings.library_folder() == tmp_path
    assert settings.cache_folder() == settings.REPO_ROOT / "rel-cache"
    monkeypatch.delenv(settings.ENV_FOLDER)
    assert settings.library_folder() == settings.REPO_ROOT / "checkpoints"


def test_backbone_status(tmp_path, monkeypatch):
    assert catalog.backbone_status("demo") == (True, "")
    ok, note = catalog.backbone_status(f"ordinalclip-demo@{tmp_path / 'missing.safetensors'}")
    assert ok is False and "not found" in note
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    assert catalog.backbone_status(f"ordinalclip-demo@{weights}")[0] is True
    assert catalog.backbone_status("nonsense")[0] is False
    assert catalog.backbone_status("")[0] is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert catalog.backbone_status("NoSuchArch:openai")[0] is False


def test_geometry_summary_matches_geometry_module(entries):
    from explorer.store.checkpoints import load_checkpoint

    P = load_checkpoint(entries["ages-rank-normal"].path).prototypes.matrix
    g = lib.geometry_summary(P, (15, 75))
    S = geometry.similarity_matrix(P.numpy(), (15, 75))
    assert g["window"] == (15, 75) and g["similarity"].shape == (61, 61)
    np.testing.assert_allclose(g["similarity"], S)
    np.testing.assert_allclose(g["views"]["softmax"], geometry.similarity_view(S, "softmax", 100.0))
    assert set(g["views"]) == set(geometry.SIMILARITY_VIEWS)
    assert g["report"] == geometry.ordinality_report(P.numpy(), (15, 75))
    assert g["violations"].shape == (60, 60) and g["adjacent"].shape == (60,)


@pytest.mark.slow
def test_projection_cache_persists_tsne_not_pca(tmp_path, monkeypatch):
    P = np.random.default_rng(0).normal(size=(30, 16))
    layout, from_disk = projections.cached_projection(P, "abc", "pca", 2, 0, cache_dir=tmp_path)
    assert layout.shape == (30, 2) and not from_disk
    assert not (tmp_path / "projections").exists()
    first, from_disk = projections.cached_projection(P, "abc", "tsne", 3, 1, cache_dir=tmp_path)
    path = projections.projection_path("abc", "tsne", 3, 1, tmp_path)
    assert not from_disk and path.is_file() and first.shape == (30, 3)
    assert not list(path.parent.glob(".*"))  # no temporary files left behind

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(geometry, "project", boom)
    again, from_disk = projections.cached_projection(P, "abc", "tsne", 3, 1, cache_dir=tmp_path)
    assert from_disk
    np.testing.assert_array_equal(again, first)
    monkeypatch.undo()
    path.write_bytes(b"garbage")  # a corrupt cache file is replaced
    fixed, from_disk = projections.cached_projection(P, "abc", "tsne", 3, 1, cache_dir=tmp_path)
    assert not from_disk and np.load(path).shape == (30, 3)
    with pytest.raises(ExplorerError):
        projections.cached_projection(P, "abc", "mds", 2, 0, cache_dir=tmp_path)


@pytest.mark.slow
def test_umap_layout_survives_a_restart_without_importing_umap(tmp_path):
    """A UMAP computed in one process is read by the next one in well under a second, without importing umap."""
    code = textwrap.dedent(f"""
        import sys, time, numpy as np
        from explorer.analysis import projections
        P = np.random.default_rng(0).normal(size=(101, 32))
        t = time.perf_counter()
        layout, from_disk = projections.cached_projection(P, "hash", "umap", 2, 0, cache_dir={str(tmp_path)!r})
        print(from_disk, "umap" in sys.modules, time.perf_counter() - t, float(layout.sum()))
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".cache" / "numba")}

    def run():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        from_disk, imported, seconds, total = out.stdout.split()
        return from_disk == "True", imported == "True", float(seconds), float(total)

    first = run()
    assert first[0] is False and first[1] is True
    second = run()
    assert second[0] is True and second[1] is False
    assert second[2] < 1.0 and second[3] == first[3]


def test_backbone_status_agrees_with_the_backbone_module():
    from explorer.backbones import sources

    assert catalog.DEMO_WEIGHTS == sources.DEMO_WEIGHTS
