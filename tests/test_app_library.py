"""The Library page at scale and its ONNX files (AppTest): a thousand checkpoints with a few unreadable
files among them, the table's filters, pages that load one checkpoint without touching the others,
the int8 ONNX file beside the fp32 one with the value change it costs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
from app_helpers import app_environment, ok, open_page
from app_testdata import BAD, make_library

from app_pages.library import SEARCHED, filter_rows
from explorer.core.errors import ExplorerError
from explorer.store import library as lib
from explorer.store import library_index

pytestmark = pytest.mark.usefixtures("one_torch_thread")
COPIES = 995  # prototype-only copies beside make_library's 5 good checkpoints: 1000 checkpoints


@pytest.fixture(scope="module")
def big_library(tmp_path_factory):
    """1000 checkpoints (make_library's 5 and 995 prototype-only exports, each with its own name) and
    make_library's 7 problem files, as the app's library folder."""
    from explorer.store.checkpoints import export_prototypes, load_checkpoint

    folder = tmp_path_factory.mktemp("big-library")
    made = make_library(folder)
    sources = [load_checkpoint(made[name]) for name in ("ages-rank-normal", "dots-rank-linear", "dots-plain")]
    for i in range(COPIES):
        export_prototypes(sources[i % len(sources)], folder / f"run-{i:04d}.safetensors", name=f"run-{i:04d}")
    with app_environment(folder, tmp_path_factory.mktemp("big-cache")) as env:
        yield env


def _problem_sentences(at) -> list[str]:
    return [m.value for m in list(at.main.error) + list(at.main.warning)]  # (the sidebar: the demo backbone's note)


@pytest.mark.slow
def test_a_thousand_checkpoints_with_unreadable_files(big_library, monkeypatch):
    """Each unusable file is named in one sentence, the thousand checkpoints are listed; a second session
    (and a filter) lists them again without inspecting any file."""
    at = open_page(big_library)
    table = at.dataframe[0].value
    assert len(table) == 1000 + len(BAD)
    status = dict(zip(table["file"], table["status"]))
    assert sum(s == "ok" for s in status.values()) == 1000  # lost-backbone (a problem file) is "backbone missing"
    problems = _problem_sentences(at)
    assert len(problems) == len(BAD)
    for name in BAD:
        file = next(big_library["folder"].glob(f"{name}.*")).name
        said = [p for p in problems if file in p]
        assert len(said) == 1 and "\n" not in said[0], (file, said)

    def boom(*a, **k):
        raise AssertionError("a file was inspected again")

    monkeypatch.setattr(library_index, "inspect_entry", boom)
    again = open_page(big_library)
    assert len(again.dataframe[0].value) == len(table)
    again.text_input(key="library-filter").set_value("run-09").run()
    ok(again)
    assert list(again.dataframe[0].value["name"]) == [f"run-{i:04d}" for i in range(900, COPIES)]
    assert f"{COPIES - 900} of {len(table)} files match." in [c.value for c in again.caption]


@pytest.mark.slow
def test_geometry_and_compare_read_only_the_chosen_checkpoints(big_library, monkeypatch):
    """After the Library listed the folder, Geometry and Compare read, hash and inspect only the
    checkpoints they show."""
    from explorer.store import checkpoints

    ok(open_page(big_library))
    read, real_load = [], checkpoints.load_checkpoint

    def load(path, *a, **k):
        read.append(str(path))
        return real_load(path, *a, **k)

    def boom(*a, **k):
        raise AssertionError("a file was inspected or hashed")

    monkeypatch.setattr(checkpoints, "load_checkpoint", load)
    monkeypatch.setattr(library_index, "inspect_entry", boom)
    monkeypatch.setattr(lib, "file_digest", boom)
    at = open_page(big_library, "geometry", checkpoint="run-0007")
    assert at.selectbox(key="geometry-checkpoint").value.endswith("run-0007.safetensors")
    assert set(read) <= {str(big_library["folder"] / "run-0007.safetensors")}
    read.clear()
    keys = [str(big_library["folder"] / f"run-{i:04d}.safetensors") for i in (3, 4, 5)]
    at.switch_page("app_pages/compare.py").run()
    assert set(read) <= set(at.multiselect(key="compare-checkpoints").value)  # the default set, shown
    read.clear()
    at.multiselect(key="compare-checkpoints").set_value(keys).run()
    ok(at)
    assert set(read) <= set(keys) and len(at.get("plotly_chart")) >= 3


def test_filter_rows_matches_every_word_and_status():
    table = pd.DataFrame([
        {"name": "ages-rank-normal", "file": "a.safetensors", "status": "ok", "method": "ordinalclip", "backbone": "demo",
         "interpolation": "normal (B=5)", "content": "full", "note": ""},
        {"name": "dots-plain", "file": "b.safetensors", "status": "ok", "method": "coop", "backbone": "ViT-B-16:openai",
         "interpolation": "", "content": "full", "note": None},
        {"name": "corrupt", "file": "corrupt.safetensors", "status": "error", "method": "", "backbone": "", "interpolation": "",
         "content": "", "note": "corrupt.safetensors is not a safetensors file."},
    ])
    assert set(SEARCHED) <= set(table.columns)
    assert list(filter_rows(table, "", [])["name"]) == ["ages-rank-normal", "dots-plain", "corrupt"]
    assert list(filter_rows(table, "DOTS vit", [])["name"]) == ["dots-plain"]  # every word, any column, any case
    assert list(filter_rows(table, "safetensors", ["error"])["name"]) == ["corrupt"]
    assert list(filter_rows(table, "normal coop", [])["name"]) == []
    assert list(filter_rows(table, "", ["ok"])["name"]) == ["ages-rank-normal", "dots-plain"]


def test_library_filters_the_table(env):
    at = open_page(env)
    everything = at.dataframe[0].value
    at.text_input(key="library-filter").set_value("dots").run()
    ok(at)
    shown = at.dataframe[0].value
    assert list(shown["file"]) == [f for f in everything["file"] if "dots" in f]
    assert f"{len(shown)} of {len(everything)} files match." in [c.value for c in at.caption]
    at.text_input(key="library-filter").set_value("").run()
    at.multiselect(key="library-status").set_value(["error"]).run()
    ok(at)
    assert set(at.dataframe[0].value["status"]) == {"error"}
    assert len(at.dataframe[0].value) == sum(everything["status"] == "error")


def test_filtering_checks_no_file(env):
    """A rerun that only filters the table lists what the previous run found (no file is even stat-ed:
    a file rewritten in place meanwhile is seen by the next ordinary run)."""
    folder, target = env["folder"], env["folder"] / "dots-rank-inv_prop.safetensors"
    stat = folder.stat()
    os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns - 3600 * 10**9))  # unchanged for an hour: its listing is reused
    at = open_page(env)
    saved = target.read_bytes()
    try:
        target.write_bytes(b"garbage")  # in place: the folder itself does not change
        at.text_input(key="library-filter").set_value("inv_prop").run()
        ok(at)
        assert list(at.dataframe[0].value["status"]) == ["ok"]
        at.run()
        assert list(at.dataframe[0].value["status"]) == ["error"]
    finally:
        target.write_bytes(saved)
    assert list(at.run().dataframe[0].value["status"]) == ["ok"]


@pytest.mark.slow
def test_library_builds_the_int8_file_beside_fp32_with_its_value_change(env):
    pytest.importorskip("onnxruntime")
    from explorer.predict.onnx_runtime import load_onnx

    path = env["folder"] / "ages-rank-normal.safetensors"
    entry = lib.inspect_entry(Path(path))[0]
    at = open_page(env)
    at.selectbox(key="library-active").set_value(str(path)).run()
    at.button(key="library-onnx-build-int8").click().run()
    ok(at)
    int8 = lib.onnx_cache_path(entry.content_hash, variant="int8")
    assert int8.is_file() and not lib.onnx_cache_path(entry.content_hash).exists()  # fp32 not built: only asked for int8
    assert "library-onnx-build" in [b.key for b in at.button]
    labels = [b.label for b in at.get("download_button")]
    assert labels == [f"Download ages-rank-normal-int8.onnx (int8, {int8.stat().st_size / 1e6:.1f} MB)"]
    q = load_onnx(int8).meta["quantization"]
    said = next(c.value for c in at.caption if c.value.startswith("int8:"))
    figures = re.search(r"moves by (\S+) years on average \(max (\S+) years\) against fp32 on (\d+) synthetic", said)
    assert figures, said
    assert [float(figures[1]), float(figures[2]), int(figures[3])] == [
        float(f"{q['mean_abs_change']:.3g}"), float(f"{q['max_abs_change']:.3g}"), q["probe_images"]]
    assert f"against {q['fp32_bytes'] / 1e6:.1f} MB in fp32" in said
    at.button(key="library-onnx-build").click().run()  # then the fp32 file, beside it
    ok(at)
    fp32 = lib.onnx_cache_path(entry.content_hash)
    assert [b.label.split(" (")[0] for b in at.get("download_button")] == [
        "Download ages-rank-normal.onnx", "Download ages-rank-normal-int8.onnx"]
    assert int8.stat().st_size < q["fp32_bytes"] <= fp32.stat().st_size  # fp32_bytes: before the metadata was added


def test_onnx_files_of_a_checkpoint_are_named_by_content_and_variant(tmp_path):
    assert lib.onnx_cache_path("abc", tmp_path) == tmp_path / "onnx" / "abc.onnx"
    assert lib.onnx_cache_path("abc", tmp_path, variant="int8") == tmp_path / "onnx" / "abc-int8.onnx"
    with pytest.raises(ExplorerError, match="Unknown ONNX variant 'fp16'"):
        lib.onnx_cache_path("abc", tmp_path, variant="fp16")
