"""Decide at a cut-point, the model-by-slice matrix, the report download and shareable views, through
AppTest (demo library, dots:20). Every number on the page is checked against `eval`'s
(explorer.analysis.evaluation.evaluate_checkpoint, what `eval --json` prints) on the same split."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from app_helpers import APP, TIMEOUT, ok, plotly_charts, texts, wait_for_backbone
from streamlit.testing.v1 import AppTest

from explorer.analysis.evaluation import evaluate_checkpoint
from explorer.store.checkpoints import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    """Two small CSV datasets of plain images in dots: ``mixed.csv`` (labels on both sides of 10) and
    ``high.csv`` (every label at least 12)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("decide-csv")
    labels = [2, 5, 9, 12, 15, 18, 20]
    for i in range(len(labels)):
        Image.new("RGB", (24, 24), (30 * i, 90, 200)).save(root / f"{i}.png")
    (root / "mixed.csv").write_text("path,label,site\n" + "".join(f"{i}.png,{a},{'ab'[i % 2]}\n" for i, a in enumerate(labels)))
    (root / "high.csv").write_text("path,label\n" + "".join(f"{i}.png,{a}\n" for i, a in enumerate(labels) if a >= 12))
    return root


def _open(env, page: str, **params) -> AppTest:
    """A fresh session opened on a URL: ``app_pages/<page>.py`` with ``params`` as its query string."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(f"app_pages/{page}.py").run()
    return ok(wait_for_backbone(at))


def _eval(env, name: str, **options) -> dict:
    """`eval --json` of a library checkpoint on dots:20 [test] (the features cached where the app keeps them)."""
    from app_testdata import demo_backbone

    ckpt = load_checkpoint(env["folder"] / f"{name}.safetensors")
    return evaluate_checkpoint(ckpt, demo_backbone(), "dots:20", cache_dir=str(env["cache"] / "features"), **options)


def _split(env, name: str):
    """The app's split predictions of a library checkpoint on dots:20 [test], recomputed here."""
    from app_testdata import demo_backbone

    from explorer.analysis.maps import split_predictions

    ckpt = load_checkpoint(env["folder"] / f"{name}.safetensors")
    return split_predictions(ckpt, demo_backbone(), "dots:20", "test", cache_dir=env["cache"] / "features")


def _table(at, column: str) -> pd.DataFrame:
    return next(t.value for t in at.dataframe if column in t.value.columns)


def _rates_match(table: pd.DataFrame, reports: dict[str, dict]) -> None:
    """The operating-point table shows each checkpoint's cut report as eval has it."""
    assert len(table) == 2 * len(reports)
    for _, row in table.iterrows():
        c = reports[row["checkpoint"]]
        point = c["default"] if row["operating point"] == "P ≥ 0.5" else c["target_recall"]
        assert row["threshold"] == pytest.approx(point["threshold"]) and row["AUC"] == pytest.approx(c["auc"])
        for rate in ("below_called_above", "above_called_below"):
            label = rate.replace("_", " ")
            assert row[label] == pytest.approx(point[rate])
            assert [row[f"{label} 95 % low"], row[f"{label} 95 % high"]] == pytest.approx(point["ci95"][rate])


@pytest.mark.slow
def test_geometry_decide_restores_from_the_url_and_shows_evals_numbers(env):
    at = _open(env, "geometry", checkpoint="dots-rank-linear", **{"open-decide": "true", "decide-dataset": "dots:20", "decide-cut": "7.0",
                                                                    "decide-recall": "0.8"})
    assert at.text_input(key="decide-dataset").value == "dots:20" and at.slider(key="decide-cut").value == 7.0
    assert at.slider(key="decide-recall").value == 0.8 and at.selectbox(key="decide-by").value == "band"
    expected = _eval(env, "dots-rank-linear", cuts=[7.0], target_recall=0.8, by=["band"])["cuts"]["7"]
    _rates_match(_table(at, "operating point"), {"dots-rank-linear": expected})
    per_band = _table(at, "below called above (P ≥ 0.5)")
    assert list(per_band["band"]) == list(expected["slices"]["band"])
    for _, row in per_band.iterrows():
        m = expected["slices"]["band"][row["band"]]
        assert (row["n"], row["below"], row["at or above"]) == (m["n"], m["below"], m["at_or_above"])
        got = row["below called above (recall 0.8)"]
        assert (pd.isna(got) and m["target_recall"]["below_called_above"] is None) or got == pytest.approx(m["target_recall"]["below_called_above"])
    curves = json.loads(next(c.proto.spec for c in plotly_charts(at) if "decide-curves" in c.proto.id))
    marks = [v for t in curves["data"] if t.get("mode") == "markers" and t["xaxis"] == "x" for v in (t["x"][0], t["y"][0])]
    assert marks == pytest.approx([v for p in (expected["default"], expected["target_recall"])
                                   for v in (p["below_called_above"], 1 - p["above_called_below"])])
    sp = _split(env, "dots-rank-linear")
    scores, t = sp.probs[:, 7:].sum(axis=1), expected["target_recall"]["threshold"]  # P(y >= 7) over ranks 0..20
    nearest = [sorted((i for i in range(len(scores)) if side(scores[i])), key=lambda i: (abs(scores[i] - t), i))[:6]
               for side in (lambda s: s < t, lambda s: s >= t)]
    ckpt = load_checkpoint(env["folder"] / "dots-rank-linear.safetensors")
    errors = np.abs(sp.values - ckpt.ranks.value_array[sp.labels])
    shown = [c.value for c in at.caption if "P(≥7)" in c.value]
    assert shown == [f"label {ckpt.ranks.labels[sp.labels[i]]} · predicted {sp.values[i]:.1f} · error {errors[i]:.1f} · P(≥7) {scores[i]:.3f}"
                     for i in nearest[0] + nearest[1]]  # the target-recall threshold's nearest, either side, nearest first


def test_a_cut_at_the_edge_or_a_dataset_with_one_side_is_one_sentence(env, csvs):
    at = _open(env, "geometry", checkpoint="dots-rank-linear", **{"open-decide": "true", "decide-dataset": f"csv:{csvs / 'mixed.csv'}", "decide-split": "all"})
    at.slider(key="decide-cut").set_value(0.0).run()
    ok(at)
    assert "The cut 0 must lie strictly inside the ranks (0 to 20 dots): both sides need ranks." in [w.value for w in at.warning]
    at.text_input(key="decide-dataset").set_value(f"csv:{csvs / 'high.csv'}")
    at.slider(key="decide-cut").set_value(5.0).run()
    ok(at)
    assert any(i.value.startswith("No image is below the cut, so AUC, average precision") for i in at.info)
    assert "no threshold here" in texts(at) and "Traceback" not in texts(at)


@pytest.mark.slow
def test_compare_decides_side_by_side(env):
    at = _open(env, "compare", checkpoints=["dots-rank-linear", "dots-plain"], **{"open-decide": "true", "compare-decide-dataset": "dots:20",
                                                                                 "compare-decide-cut": "12.0"})
    assert [k.rsplit("/", 1)[1] for k in at.multiselect(key="compare-checkpoints").value] == ["dots-rank-linear.safetensors",
                                                                                              "dots-plain.safetensors"]
    reports = {n: _eval(env, n, cuts=[12.0], by=["band"])["cuts"]["12"] for n in ("dots-rank-linear", "dots-plain")}
    _rates_match(_table(at, "operating point"), reports)
    curves = json.loads(next(c.proto.spec for c in plotly_charts(at) if "compare-decide-curves" in c.proto.id))
    assert {t["name"] for t in curves["data"] if t.get("mode") == "lines" and t.get("showlegend")} == {
        f"{n} (AUC {r['auc']:.3f})" for n, r in reports.items()}
    assert [t.label for t in at.tabs] == ["dots-rank-linear", "dots-plain"]


@pytest.mark.slow
def test_the_matrix_takes_twelve_checkpoints_and_its_cells_are_eval_slices(env):
    from app_testdata import build, demo_backbone

    from explorer.store.checkpoints import save_checkpoint

    extra = [save_checkpoint(env["folder"] / f"extra-{k}.safetensors", build("ordinalclip", seed=10 + k), demo_backbone(),
                             name=f"extra-{k}") for k in range(9)]
    try:
        names = ["dots-rank-linear", "dots-plain", "dots-rank-inv_prop"] + [f"extra-{k}" for k in range(9)]
        at = _open(env, "compare", **{"open-matrix": "true", "matrix-checkpoints": names, "matrix-dataset": "dots:20"})
        assert at.multiselect(key="matrix-checkpoints").value == names
        figure = json.loads(next(c.proto.spec for c in plotly_charts(at) if "matrix-figure" in c.proto.id))["data"][0]
        assert list(figure["y"]) == names
        for r, name in enumerate(names):
            slices = _eval(env, name, by=["band"])["slices"]["band"]
            assert list(figure["x"]) == list(slices)
            for c, m in enumerate(slices.values()):
                assert figure["customdata"][r][c] == pytest.approx([m["mae_value"], *m["ci95"], m["n"]], abs=1e-12)
                assert figure["text"][r][c] == f"{m['mae_value']:.2f}"
            full = [m["mae_value"] for m in slices.values()]
            assert figure["z"][r] == pytest.approx([v - np.mean(full) for v in full])  # colour: the cell less the row's mean
    finally:
        for path in extra:
            path.unlink()


@pytest.mark.slow
def test_the_compare_page_offers_the_report_with_evals_numbers(env):
    names = ["dots-rank-linear", "dots-plain"]
    at = _open(env, "compare", **{"open-matrix": "true", "matrix-checkpoints": names, "matrix-dataset": "dots:20", "report-cuts": "6, 13.5"})
    at.button(key="report-build").click().run()
    ok(at)
    assert any(b.label == "Download the report (HTML)" for b in at.get("download_button"))
    html = at.session_state["matrix-report"][1].decode("utf-8")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1).replace("<\\/", "</"))
    for name in names:
        assert data["evaluations"][name] == json.loads(json.dumps(_eval(env, name, by=["band"], cuts=[6.0, 13.5])))
    at.text_input(key="report-cuts").set_value("6, x").run()
    assert "The cut-points must be numbers separated by commas (got '6, x')." in [w.value for w in at.warning]


def test_the_url_restores_geometry_compare_and_predict_and_the_link_holds_the_view(env, csvs):
    at = _open(env, "geometry", checkpoint="dots-plain", **{"geometry-view": "Softmax", "geometry-dims": "3-D", "decode-top": "2", "open-decode": "true", "open-decide": "true",
                                                           "decide-dataset": f"csv:{csvs / 'mixed.csv'}", "decide-split": "all",
                                                           "decide-cut": "10.0", "decide-recall": "0.7", "decide-point": "P ≥ 0.5",
                                                           "decide-by": "site"})
    key = str(env["folder"] / "dots-plain.safetensors")
    assert at.selectbox(key="geometry-checkpoint").value == key
    assert at.segmented_control(key="geometry-view").value == "softmax" and at.segmented_control(key="geometry-dims").value == 3
    assert at.number_input(key="decode-top").value == 2 and at.segmented_control(key="decide-point").value == "default"
    assert (at.selectbox(key="decide-split").value, at.slider(key="decide-cut").value, at.slider(key="decide-recall").value,
            at.selectbox(key="decide-by").value) == ("all", 10.0, 0.7, "site")
    assert list(_table(at, "site")["site"]) == ["a", "b"]
    link = at.sidebar.code[0].value
    assert link.startswith("?checkpoint=dots-plain&") and "geometry-view=Softmax" in link and "geometry-dims=3-D" in link
    assert "open-decide=true" in link and "open-map" not in link  # the open sections are part of the view
    at = _open(env, "compare", checkpoints=["dots-plain", "dots-rank-inv_prop"], **{"compare-view": "Max-normalised"})
    assert at.multiselect(key="compare-checkpoints").value == [key, str(env["folder"] / "dots-rank-inv_prop.safetensors")]
    assert at.segmented_control(key="compare-view").value == "max_normalised"
    at = _open(env, "predict", checkpoint="dots-plain")
    assert at.selectbox(key="predict-checkpoint").value == key
    at.selectbox(key="predict-checkpoint").set_value(str(env["folder"] / "ages-rank-normal.safetensors")).run()
    assert at.query_params["checkpoint"] == "ages-rank-normal"  # the page writes the checkpoint it shows into the URL
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["checkpoint"] = "no-such-model"
    at.run()
    assert any(w.value.startswith("The link names no-such-model, which is not in this library") for w in at.warning)
