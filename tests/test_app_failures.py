"""Where it fails in the app (issue 17), through AppTest: slices with intervals, the worst images and
their distributions, the rank axis, the gallery of a map selection, Compare side by side. Figures are
checked against the compute package on the same split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from test_app import _charts, _ok, _texts, _wait_for_backbone, env, open_page  # noqa: F401 (env is a fixture)

from explorer.analysis import slices
from explorer.analysis.maps import split_predictions
from explorer.store.checkpoints import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _geometry_on_dots(env):
    at = _wait_for_backbone(open_page(env, "geometry", checkpoint="dots-rank-linear"))
    at.text_input(key="fails-dataset").set_value("dots:20").run()
    return _ok(at)


def _split(env):
    from app_testdata import demo_backbone

    ckpt = load_checkpoint(env["folder"] / "dots-rank-linear.safetensors")
    return ckpt, split_predictions(ckpt, demo_backbone(), "dots:20", "test", cache_dir=env["cache"] / "features")


def test_geometry_where_it_fails_bands_worst_images_and_rank_axis(env):
    at = _geometry_on_dots(env)
    assert "Where it fails" in _texts(at)
    ckpt, sp = _split(env)
    report = slices.slice_report(sp.outputs(), sp.samples, ckpt.ranks, ["band"])
    band = next(c for c in _charts(at) if c.proto.id.endswith("fails-band") or "fails-band" in c.proto.id)
    assert band is not None
    table = next(t.value for t in at.dataframe if "band" in list(t.value.columns))
    assert list(table["band"]) == list(report["slices"]["band"])
    assert np.allclose(table["MAE"], [m["mae_value"] for m in report["slices"]["band"].values()])
    errors = np.abs(sp.values - ckpt.ranks.value_array[sp.labels])
    worst = np.sort(errors)[::-1][:12]
    captions = [c.value for c in at.caption if c.value.startswith("label ")]
    assert len(captions) == 12 and [float(c.rsplit("error ", 1)[1]) for c in captions] == pytest.approx(worst, abs=0.051)
    axis_fig = json.loads(next(c.proto.spec for c in _charts(at) if "fails-axis" in c.proto.id))
    feats = sp.features / np.linalg.norm(sp.features, axis=1, keepdims=True)
    P = sp.prototypes / np.linalg.norm(sp.prototypes, axis=1, keepdims=True)
    rho = stats.spearmanr(ckpt.ranks.value_array[sp.labels], feats @ (P[-1] - P[0])).statistic
    assert axis_fig["layout"]["title"]["text"] == f"Spearman ρ = {rho:.3f}"
    first = next(b for b in at.button if b.label == "Distribution")
    first.click().run()
    _ok(at)
    assert any("predicted distribution" in c.proto.spec for c in _charts(at) if "fails-gallery-distribution" in c.proto.id)


def test_a_map_selection_shows_its_images_and_their_metrics(env):
    at = _wait_for_backbone(open_page(env, "geometry", checkpoint="dots-rank-linear"))
    at.text_input(key="map-dataset").set_value("dots:20").run()
    _ok(at)
    assert "Box- or lasso-select" in _texts(at)
    at.session_state["map-selected"] = [0, 5, 7]  # what the chart's selection callback stores
    at.run()
    _ok(at)
    ckpt, sp = _split(env)
    idx = np.array([0, 5, 7])
    mae = np.abs(sp.values[idx] - ckpt.ranks.value_array[sp.labels[idx]]).mean()
    assert f"**3 selected images** · value MAE {mae:.3f}" in _texts(at)
    assert sum(1 for b in at.button if b.label == "Distribution") == 3


def test_compare_where_they_fail_side_by_side(env):
    at = _wait_for_backbone(open_page(env, "compare"))
    keys = [str(env["folder"] / f"{n}.safetensors") for n in ("dots-rank-linear", "dots-plain")]
    at.multiselect(key="compare-checkpoints").set_value(keys).run()
    at.text_input(key="compare-fails-dataset").set_value("dots:20").run()
    _ok(at)
    assert "Where they fail" in _texts(at)
    table = next(t.value for t in at.dataframe if {"band", "checkpoint"} <= set(t.value.columns))
    assert set(table["checkpoint"]) == {"dots-rank-linear", "dots-plain"}
