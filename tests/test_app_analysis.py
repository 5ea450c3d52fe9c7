"""The analysis sections of the Geometry and Compare pages through AppTest (demo library, dots:20)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from app_helpers import ok, open_page, plotly_charts, texts, wait_for_backbone

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _downloads(at) -> list:
    return [el for el in at.get("download_button")]


def test_geometry_decoding_panel(env):
    at = wait_for_backbone(open_page(env, "geometry", checkpoint="dots-rank-linear", opened=("decode",)))
    text = texts(at)
    assert "Nearest words of the learned tokens" in text
    tables = [t.value for t in at.dataframe]
    decoded = next(t for t in tables if "next nearest" in t.columns)
    assert list(decoded["slot"].unique()) == ["shared"] and len(decoded) == 4  # 4 context tokens
    assert any(getattr(d, "label", "") == "All neighbours (CSV)" or "All neighbours" in str(d.proto) for d in _downloads(at))
    at.number_input(key="decode-top").set_value(2).run()
    ok(at)


def test_geometry_decoding_of_a_prototype_only_checkpoint(env):
    at = open_page(env, "geometry", checkpoint="ages-prototypes", opened=("decode",))
    assert "no learned tokens" in texts(at)


@pytest.mark.slow
def test_geometry_map_confusion_and_errors(env, tmp_path):
    from app_testdata import demo_backbone

    from explorer.analysis.maps import confusion_matrix, split_predictions
    from explorer.store.checkpoints import load_checkpoint

    at = wait_for_backbone(open_page(env, "geometry", checkpoint="dots-rank-linear", opened=("map",)))
    # no training run recorded in this checkpoint: nothing is evaluated until a dataset is given
    assert at.text_input(key="map-dataset").value == "" and "Give a dataset spec" in texts(at)
    at.text_input(key="map-dataset").set_value("dots:20").run()
    ok(at)
    text = texts(at)
    assert "Images and prototypes in one map" in text and "ECE / MCE" in text
    keys = [c.proto.id for c in plotly_charts(at)]
    assert len(plotly_charts(at)) >= 7  # heatmap, violations, adjacent, projection, map, distances, errors, confusion
    ckpt = load_checkpoint(env["folder"] / "dots-rank-linear.safetensors")
    sp = split_predictions(ckpt, demo_backbone(), "dots:20", "test", cache_dir=env["cache"] / "features")
    mae = float(np.mean(np.abs(sp.expected - sp.labels)))
    assert f"{mae:.3f}" in [m.value for m in at.metric]
    assert confusion_matrix(sp.labels, sp.argmax, 21).sum() == len(sp.labels)
    assert len(keys) == len(set(keys))
    at.segmented_control(key="map-method").set_value("tsne").run()
    ok(at)
    at.text_input(key="map-dataset").set_value("dots:4").run()  # 5 ranks for a 21-rank checkpoint: matched by value
    ok(at)
    assert "Labels matched to the checkpoint's ranks by value." in texts(at)
    from PIL import Image

    for i, label in enumerate([0, 3, 25, 30]):
        Image.new("RGB", (24, 24), (60 * i, 90, 200)).save(tmp_path / f"{i}.png")
    (tmp_path / "own.csv").write_text("path,label\n" + "".join(f"{i}.png,{a}\n" for i, a in enumerate([0, 3, 25, 30])))
    at.selectbox(key="map-split").set_value("all")
    at.text_input(key="map-dataset").set_value(f"csv:{tmp_path / 'own.csv'}").run()  # 25 and 30 are not its ranks
    assert ("2 of 4 images have labels outside the checkpoint's ranks 0-20 (e.g. 25, 30); --skip-bad skips them."
            in [w.value for w in at.warning])


@pytest.mark.slow
def test_compare_reliability_diagram_and_curves(env, tmp_path):
    at = wait_for_backbone(open_page(env, "compare", opened=("calibration",)))
    keys = [str(env["folder"] / f"{n}.safetensors") for n in ("dots-rank-linear", "dots-plain", "ages-rank-normal")]
    at.multiselect(key="compare-checkpoints").set_value(keys).run()
    ok(at)
    assert "Calibration" in texts(at) and at.text_input(key="calibration-dataset").value == ""
    at.text_input(key="calibration-dataset").set_value("dots:20").run()
    ok(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "ages-rank-normal" in warnings  # 101 ranks, not evaluated on dots:20
    table = next(t.value for t in at.dataframe if "ECE" in t.columns)
    assert list(table["checkpoint"]) == ["dots-rank-linear", "dots-plain"]
    assert ((table["ECE"] >= 0) & (table["ECE"] <= table["MCE"] + 1e-12)).all()
    runs = pd.DataFrame([{"method": lr, "shots": s, "seed": k, "mae_exp": 2.0 - 0.1 * k, "acc_max": 0.3}
                         for lr in ("zeroshot", "ordinalclip:linear") for s in (1, 2, 4) for k in (0, 1)])
    runs.to_csv(tmp_path / "runs.csv", index=False)
    at.text_input(key="curves-folder").set_value(str(tmp_path)).run()
    ok(at)
    figs = [c for c in plotly_charts(at) if "curves" in c.proto.id]
    assert len(figs) == 2
    at.text_input(key="curves-folder").set_value(str(tmp_path / "missing")).run()
    assert "runs.csv" in " ".join(e.value for e in at.error)


def test_a_trained_checkpoint_is_analysed_on_its_own_dataset_and_binned_methods_use_their_bins(env, tmp_path):
    """The map defaults to the dataset the checkpoint was trained on; a NumCLIP checkpoint's confusion
    matrix and calibration are over its concept bins (labels mapped to their bins)."""
    from app_testdata import demo_backbone

    from explorer.analysis.maps import split_predictions
    from explorer.store.checkpoints import load_checkpoint
    from explorer.training.config import TrainConfig
    from explorer.training.trainer import train

    out = env["folder"] / "analysis-numclip.safetensors"
    train(TrainConfig(dataset="dots:6:8", out=str(out), method_config={"method": "numclip", "concepts": "dots"}, epochs=2,
                      cache_dir=str(env["cache"] / "features"), device="cpu"))
    ckpt = load_checkpoint(out)
    sp = split_predictions(ckpt, demo_backbone(), "dots:6:8", "test", cache_dir=env["cache"] / "features")
    assert sp.probs.shape[1] == 5 and set(sp.targets) <= set(range(5))
    assert list(sp.targets) == [0 if v < 3 else 1 if v < 7 else 2 for v in sp.labels]  # dots bins 0, 3, 7, ...
    at = wait_for_backbone(open_page(env, "geometry", checkpoint="analysis-numclip", opened=("map",)))
    ok(at)
    assert at.text_input(key="map-dataset").value == "dots:6:8" and "ECE / MCE" in texts(at)


def test_geometry_sections_on_a_dataset_compute_only_once_opened(env):
    """A page opened from a link draws the prototypes' figures without the dataset and backbone sections;
    each opens on request, and the open ones are in the URL (a shared link opens them again)."""
    at = open_page(env, "geometry", checkpoint="dots-rank-linear")
    labels = [e.label for e in at.main.expander]
    assert labels == ["Nearest words of the learned tokens", "Images and prototypes in one map", "Where it fails", "Decide at a cut-point"]
    assert not {"decode-top", "map-dataset", "fails-dataset", "decide-dataset"} & _widget_keys(at)
    assert len(plotly_charts(at)) == 4 and not any(k.startswith("open-") for k in at.query_params)  # heatmap, violations, adjacent, projection
    at.session_state["open-map"] = True  # what a click on the expander does
    at.run()
    ok(at)
    assert "map-dataset" in _widget_keys(at) and "fails-dataset" not in _widget_keys(at)


def _widget_keys(at) -> set:
    return {w.key for kind in ("text_input", "number_input", "selectbox") for w in getattr(at.main, kind)}
