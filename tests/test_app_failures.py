"""Where it fails in the app (issue 17), through AppTest: slices with intervals, the worst images and
their distributions, the rank axis, the gallery of a map selection, Compare side by side. Figures are
checked against the compute package on the same split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from app_helpers import ok, open_page, plotly_charts, texts, wait_for_backbone
from scipy import stats

from explorer.analysis import slices
from explorer.analysis.maps import split_predictions
from explorer.store.checkpoints import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _geometry_on_dots(env):
    at = wait_for_backbone(open_page(env, "geometry", checkpoint="dots-rank-linear", opened=("fails",)))
    at.text_input(key="fails-dataset").set_value("dots:20").run()
    return ok(at)


def _split(env):
    from app_testdata import demo_backbone

    ckpt = load_checkpoint(env["folder"] / "dots-rank-linear.safetensors")
    return ckpt, split_predictions(ckpt, demo_backbone(), "dots:20", "test", cache_dir=env["cache"] / "features")


def test_geometry_where_it_fails_bands_worst_images_and_rank_axis(env):
    at = _geometry_on_dots(env)
    assert "Where it fails" in texts(at)
    ckpt, sp = _split(env)
    report = slices.slice_report(sp.outputs(), sp.samples, ckpt.ranks, ["band"])
    band = next(c for c in plotly_charts(at) if c.proto.id.endswith("fails-band") or "fails-band" in c.proto.id)
    assert band is not None
    table = next(t.value for t in at.dataframe if "band" in list(t.value.columns))
    assert list(table["band"]) == list(report["slices"]["band"])
    assert np.allclose(table["MAE"], [m["mae_value"] for m in report["slices"]["band"].values()])
    errors = np.abs(sp.values - ckpt.ranks.value_array[sp.labels])
    worst = np.sort(errors)[::-1][:12]
    captions = [c.value for c in at.caption if c.value.startswith("label ")]
    assert len(captions) == 12 and [float(c.rsplit("error ", 1)[1]) for c in captions] == pytest.approx(worst, abs=0.051)
    axis_fig = json.loads(next(c.proto.spec for c in plotly_charts(at) if "fails-axis" in c.proto.id))
    feats = sp.features / np.linalg.norm(sp.features, axis=1, keepdims=True)
    P = sp.prototypes / np.linalg.norm(sp.prototypes, axis=1, keepdims=True)
    rho = stats.spearmanr(ckpt.ranks.value_array[sp.labels], feats @ (P[-1] - P[0])).statistic
    assert axis_fig["layout"]["title"]["text"] == f"Spearman ρ = {rho:.3f}"
    first = next(b for b in at.button if b.label == "Distribution")
    first.click().run()
    ok(at)
    assert any("predicted distribution" in c.proto.spec for c in plotly_charts(at) if "fails-gallery-distribution" in c.proto.id)


def test_a_map_selection_shows_its_images_and_their_metrics(env):
    at = wait_for_backbone(open_page(env, "geometry", checkpoint="dots-rank-linear", opened=("map",)))
    at.text_input(key="map-dataset").set_value("dots:20").run()
    ok(at)
    assert "Box- or lasso-select" in texts(at)
    at.session_state["map-selected"] = [0, 5, 7]  # what the chart's selection callback stores
    at.run()
    ok(at)
    ckpt, sp = _split(env)
    idx = np.array([0, 5, 7])
    mae = np.abs(sp.values[idx] - ckpt.ranks.value_array[sp.labels[idx]]).mean()
    assert f"**3 selected images** · value MAE {mae:.3f}" in texts(at)
    assert sum(1 for b in at.button if b.label == "Distribution") == 3


def test_compare_where_they_fail_side_by_side(env):
    at = wait_for_backbone(open_page(env, "compare", opened=("fails",)))
    keys = [str(env["folder"] / f"{n}.safetensors") for n in ("dots-rank-linear", "dots-plain")]
    at.multiselect(key="compare-checkpoints").set_value(keys).run()
    at.text_input(key="compare-fails-dataset").set_value("dots:20").run()
    ok(at)
    assert "Where they fail" in texts(at)
    table = next(t.value for t in at.dataframe if {"band", "checkpoint"} <= set(t.value.columns))
    assert set(table["checkpoint"]) == {"dots-rank-linear", "dots-plain"}


def test_the_compare_page_shows_the_demo_table_over_seeds(monkeypatch, tmp_path):
    """Bundled demo checkpoints on Compare: the mean ± std table of checkpoints/RESULTS.md (3 seeds)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from app_pages.ui.sections.side_by_side import demo_seeds_table

    repo = Path(__file__).resolve().parents[1]
    table = demo_seeds_table(repo / "checkpoints" / "RESULTS.md")
    assert table.startswith("Over seeds 0, 1, 2") and "| ordinalclip-linear | 3 |" in table and "±" in table
    monkeypatch.setenv("ORDINAL_EXPLORER_CHECKPOINTS", str(repo / "checkpoints"))  # the bundled demo library
    monkeypatch.setenv("ORDINAL_EXPLORER_CACHE", str(tmp_path))
    at = AppTest.from_file(str(repo / "app.py"), default_timeout=120).run()
    at.switch_page("app_pages/compare.py").run()
    keys = [str(repo / "checkpoints" / f"{n}.safetensors") for n in ("ordinalclip-linear", "coop")]
    at.multiselect(key="compare-checkpoints").set_value(keys).run()
    assert not at.exception
    assert any(table in m.value for m in at.markdown)


def test_predict_chart_labels_sit_on_two_lines():
    """The "90 % interval" and "expected" labels never overlap: the interval's sits a line lower."""
    from app_pages.ui import charts

    record = {"interval_values": [4.0, 5.0], "coverage": 0.9, "expected_value": 4.5, "value": 4.5, "estimate": "expected"}
    fig = charts.distribution(np.full(10, 0.1), [str(i) for i in range(10)], np.arange(10.0), record)
    shifts = sorted(a.yshift or 0 for a in fig.layout.annotations)
    assert len(shifts) == 2 and shifts[0] <= -14 and shifts[1] == 0


def test_compare_heatmaps_are_drawn_at_one_size(env):
    """Every Compare heatmap carries the (shared) colour scale, so none is drawn narrower than the others."""
    at = open_page(env, "compare")
    keys = [str(env["folder"] / f"{n}.safetensors") for n in ("dots-rank-linear", "dots-plain", "dots-rank-inv_prop")]
    at.multiselect(key="compare-checkpoints").set_value(keys).run()
    ok(at)
    heat = [json.loads(c.proto.spec) for c in plotly_charts(at) if "compare-heat" in c.proto.id]
    assert len(heat) == 3 and all(h["data"][0]["showscale"] for h in heat)
    assert len({(h["data"][0]["zmin"], h["data"][0]["zmax"]) for h in heat}) == 1  # one colour scale
