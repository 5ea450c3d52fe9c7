"""Analyses no peer offers: calibration (ECE, MCE, interval coverage), nearest-word decoding of
learned tokens, few-shot curves from a sweep, images + prototypes in one map, confusion matrices."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from app_testdata import demo_backbone

from explorer import cli
from explorer.analysis import curves, maps
from explorer.analysis.decode import clean_token, decode_checkpoint, decode_rows, nearest_tokens, token_embedding_matrix
from explorer.core.ranks import Ranks
from explorer.methods import stored_config
from explorer.methods.prompt import build_prompt_model
from explorer.metrics import calibration as C
from explorer.store.checkpoints import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone():
    return demo_backbone()  # the test process's one demo backbone (only read here)


def _random_probs(n: int, r: int, seed: int = 0, sharp: float = 3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, r)) * sharp
    P = np.exp(z - z.max(1, keepdims=True))
    return P / P.sum(1, keepdims=True), rng.integers(0, r, size=n)


# --- calibration ---------------------------------------------------------------------------------


def _ece_mce_loop(P, y, bins):
    """Guo et al. 2017 written out: bins ((m-1)/M, m/M], |B|/n |acc - conf| summed / maxed."""
    n = len(y)
    total, worst = 0.0, 0.0
    for m in range(1, bins + 1):
        lo, hi = (m - 1) / bins, m / bins
        members = []
        for i in range(n):
            c = max(P[i])
            if (lo < c <= hi) or (m == 1 and c == 0):
                members.append(i)
        if not members:
            continue
        acc = sum(1.0 for i in members if int(np.argmax(P[i])) == y[i]) / len(members)
        conf = sum(max(P[i]) for i in members) / len(members)
        total += len(members) / n * abs(acc - conf)
        worst = max(worst, abs(acc - conf))
    return total, worst


def _coverage_loop(P, y, coverage=0.9):
    inside = 0
    tail = (1 - coverage) / 2
    for i in range(len(y)):
        cdf, lo, hi = 0.0, None, None
        for r, p in enumerate(P[i]):
            cdf += p
            if lo is None and cdf >= tail - 1e-12:
                lo = r
            if hi is None and cdf >= 1 - tail - 1e-12:
                hi = r
        hi = len(P[i]) - 1 if hi is None else hi
        inside += lo <= y[i] <= hi
    return inside / len(y)


@pytest.mark.parametrize("seed, bins, sharp", [(0, 15, 3.0), (1, 10, 0.5), (2, 5, 8.0)])
def test_ece_mce_coverage_match_plain_loops(seed, bins, sharp):
    P, y = _random_probs(300, 7, seed, sharp)
    want_ece, want_mce = _ece_mce_loop(P, y, bins)
    assert C.ece(y, P, n_bins=bins) == pytest.approx(want_ece, abs=1e-12)
    assert C.mce(y, P, n_bins=bins) == pytest.approx(want_mce, abs=1e-12)
    assert C.interval_coverage(y, P) == pytest.approx(_coverage_loop(P, y), abs=1e-12)
    table = C.reliability_table(y, P, n_bins=bins)
    assert sum(table["count"]) == 300 and len(table["accuracy"]) == bins


def test_perfectly_confident_and_right_is_calibrated():
    y = np.array([0, 1, 2, 3])
    P = np.eye(4)[y]
    assert C.ece(y, P) == 0.0 and C.mce(y, P) == 0.0 and C.interval_coverage(y, P) == 1.0
    wrong = np.eye(4)[[1, 2, 3, 0]]
    assert C.ece(y, wrong) == pytest.approx(1.0) and C.interval_coverage(y, wrong) == 0.0


def test_calibration_keys_are_in_the_metric_panel():
    from explorer.metrics.panel import metric_panel

    P, y = _random_probs(50, 5)
    panel = metric_panel(y, P)
    assert panel["ece"] == C.ece(y, P) and panel["mce"] == C.mce(y, P)
    assert panel["interval_coverage"] == C.interval_coverage(y, P, coverage=0.9)


# --- decoding --------------------------------------------------------------------------------------


def test_nearest_tokens_of_known_embeddings(backbone):
    W = token_embedding_matrix(backbone)
    ids = backbone.tokenizer.encode("photo of dots")
    got = nearest_tokens(W[ids], W, lambda i: clean_token(backbone.tokenizer, i), k=3)
    assert [g[0]["id"] for g in got] == ids
    assert [g[0]["token"] for g in got] == ["photo", "of", "dots"]
    assert all(g[0]["distance"] == 0.0 and g[0]["cosine"] == pytest.approx(1.0) for g in got)
    assert all(g[0]["distance"] <= g[1]["distance"] <= g[2]["distance"] for g in got)
    # a point between two tokens is nearest to the closer one; distances are the exact Euclidean ones
    a, b = ids[0], ids[2]
    x = 0.8 * W[a] + 0.2 * W[b]
    near = nearest_tokens(x, W, str, k=2)[0]
    assert near[0]["id"] == a and near[0]["distance"] == pytest.approx(float((x - W[a]).norm()), rel=1e-5)


def _save(tmp_path, backbone, name, **cfg):
    ranks = Ranks.integers(5)
    model = build_prompt_model(backbone, stored_config(dict(num_ranks=5, **cfg)), ranks, seed=0)
    return load_checkpoint(save_checkpoint(tmp_path / f"{name}.safetensors", model, backbone, name=name))


def test_untrained_text_initialised_context_decodes_to_its_text(tmp_path, backbone):
    ckpt = _save(tmp_path, backbone, "init", kind="ordinalclip", context_init="a photo of many", num_base_ranks=3,
                 rank_names=["few", "some", "many"])
    out = decode_checkpoint(ckpt, backbone, top=3)
    assert [pos[0]["token"] for pos in out["context"]] == ["a", "photo", "of", "many"]
    assert all(pos[0]["distance"] == 0.0 for pos in out["context"])
    assert [b["tokens"][0][0]["token"] for b in out["bases"]] == ["few", "some", "many"]
    assert [b["position"] for b in out["bases"]] == [0.0, 2.0, 4.0]
    assert len(out["ranks"]) == 5 and out["ranks"][0]["tokens"][0][0]["token"] == "few"  # rank 0 is mostly base 0
    json.dumps(out)
    rows = pd.DataFrame(decode_rows(out))
    assert set(rows["group"]) == {"context", "rank", "base"} and len(rows) == (4 + 5 + 3) * 3


def test_rank_specific_context_and_plain_learner(tmp_path, backbone):
    ckpt = _save(tmp_path, backbone, "plain", kind="coop", context_init="a photo", rank_specific_context=True)
    out = decode_checkpoint(ckpt, backbone, top=2)
    assert out["context_per_rank"] and len(out["context"]) == 5
    assert [p[0]["token"] for p in out["context"][3]] == ["a", "photo"]
    assert out["bases"] is None and len(out["ranks"]) == 5


def test_template_checkpoint_has_no_learned_tokens(tmp_path, backbone, capsys):
    ckpt = _save(tmp_path, backbone, "tmpl", kind="zeroshot", template="a photo of {} dots.")
    out = decode_checkpoint(ckpt, backbone)
    assert out["context"] == [] and out["ranks"] == [] and "no learned tokens" in out["message"]
    assert cli.main(["decode", str(ckpt.path)]) == 0
    text = capsys.readouterr().out.strip()
    assert text.count(".") == 1 and text.endswith(".") and "\n" not in text  # one sentence


def test_decode_cli_json(tmp_path, backbone, capsys):
    ckpt = _save(tmp_path, backbone, "ctx", kind="ordinalclip", context_init="a photo", num_base_ranks=2)
    assert cli.main(["decode", str(ckpt.path), "--top", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p[0]["token"] for p in data["context"]] == ["a", "photo"]
    assert set(data["context"][0][0]) == {"token", "id", "distance", "cosine"}
    assert len(data["bases"]) == 2 and len(data["ranks"]) == 5


# --- confusion, per-rank errors, maps --------------------------------------------------------------


def test_confusion_matrix_matches_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    y[y == 5] = 4  # rank 5 never a label: still a row of zeros
    np.testing.assert_array_equal(maps.confusion_matrix(y, p, 6), confusion_matrix(y, p, labels=range(6)))


def test_per_rank_errors_and_distances():
    y = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0.0, 2.0, 1.5, 2.0, 1.0, 3.0])
    rows = maps.per_rank_errors(y, pred, 4)
    assert rows[0]["mae"] == 1.0 and rows[0]["std"] == pytest.approx(np.std([0, 2], ddof=1))
    assert rows[1] == {"rank": 1, "n": 1, "mae": 0.5, "std": 0.0, "sem": 0.0} and rows[3]["mae"] is None
    P = np.eye(3)
    X = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 1.0, 0]])
    d = maps.prototype_distances(X, [0, 1, 2, 2], P, [0, 1, 2, 1])
    assert d[2]["to_own"] == pytest.approx(0.5) and d[2]["to_predicted"] == pytest.approx(0.0)
    assert d[0]["to_own"] == 0.0 and d[2]["correct"] == 0.5


def test_joint_layout_is_cached_by_content(tmp_path):
    rng = np.random.default_rng(0)
    X, P = rng.normal(size=(30, 8)), rng.normal(size=(5, 8))
    a_img, a_pro, disk = maps.joint_layout(X, P, "tsne", 2, 0, cache_dir=tmp_path)
    assert a_img.shape == (30, 2) and a_pro.shape == (5, 2) and not disk
    b_img, b_pro, disk = maps.joint_layout(X, P, "tsne", 2, 0, cache_dir=tmp_path)
    assert disk and np.array_equal(a_img, b_img) and np.array_equal(a_pro, b_pro)
    _, _, disk = maps.joint_layout(X, P * 2 + 1, "tsne", 2, 0, cache_dir=tmp_path)
    assert not disk
    pca_img, pca_pro, _ = maps.joint_layout(X, P, "pca", 3, 0)
    assert pca_img.shape == (30, 3) and pca_pro.shape == (5, 3)


def test_split_predictions_agree_with_evaluate_checkpoint(tmp_path, backbone):
    from explorer.analysis.evaluation import evaluate_checkpoint
    from explorer.metrics.panel import metric_panel

    ckpt = _save(tmp_path, backbone, "eval", kind="ordinalclip", num_context_tokens=2, num_base_ranks=2)
    sp = maps.split_predictions(ckpt, backbone, "dots:4:6", "test", cache_dir=tmp_path / "f")
    ev = evaluate_checkpoint(ckpt, backbone, "dots:4:6", "test", cache_dir=str(tmp_path / "f"))
    assert ev["metrics"]["mae_exp"] == pytest.approx(metric_panel(sp.labels, sp.probs)["mae_exp"])
    assert ev["metrics"]["ece"] == pytest.approx(C.ece(sp.labels, sp.probs))
    assert np.allclose(np.linalg.norm(sp.features, axis=1), 1.0)


def test_split_predictions_match_a_dataset_with_other_ranks_by_value(tmp_path, backbone):
    from explorer.analysis.evaluation import evaluate_checkpoint
    from explorer.core.errors import ExplorerError
    from explorer.metrics.panel import metric_panel

    ckpt = _save(tmp_path, backbone, "five", kind="coop", num_context_tokens=2)  # ranks 0..4, no unit
    sp = maps.split_predictions(ckpt, backbone, "dots:2:9", "all", cache_dir=tmp_path / "f")
    assert sp.probs.shape == (27, 5) and sorted(set(sp.labels.tolist())) == [0, 1, 2]
    assert sp.note == "Labels matched to the checkpoint's ranks by value."
    ev = evaluate_checkpoint(ckpt, backbone, "dots:2:9", "all", cache_dir=str(tmp_path / "f"))
    assert ev["metrics"]["mae_exp"] == pytest.approx(metric_panel(sp.labels, sp.probs)["mae_exp"])
    with pytest.raises(ExplorerError, match=r"^4 of 14 images have labels outside the checkpoint's ranks 0-4 \(e.g. 5, 6\)"):
        maps.split_predictions(ckpt, backbone, "dots:6:2", "all", cache_dir=tmp_path / "f")
    sp = maps.split_predictions(ckpt, backbone, "dots:6:2", "all", cache_dir=tmp_path / "f", skip_bad=True)
    assert len(sp.labels) == 10 and sp.labels.max() == 4 and "; 4 images with labels outside them were skipped" in sp.note


# --- curves from a sweep ------------------------------------------------------------------------------


@pytest.mark.slow
def test_curves_from_a_tiny_sweep(tmp_path, capsys):
    out_dir = tmp_path / "sweep"
    code = cli.main(["sweep", "dots:4:8", "--methods", "zeroshot,ordinalclip:linear", "--shots-list", "1,2", "--seeds", "0,1",
                     "--epochs", "2", "--context-tokens", "2", "--out-dir", str(out_dir), "--cache-dir", str(tmp_path / "f"),
                     "--device", "cpu", "--quiet"])
    assert code == 0 and "curves.csv" in capsys.readouterr().out
    runs = pd.read_csv(out_dir / "runs.csv")
    table = pd.read_csv(out_dir / "curves.csv")
    assert len(table) == 2 * 2 * 2  # methods x shots x (mae_exp, acc_max)
    assert set(table["regime"]) == {"few-shot"} and set(table["seeds"]) == {2}
    for _, row in table.iterrows():
        vals = runs.loc[(runs["method"] == row["method"]) & (runs["shots"].astype(str) == str(row["shots"])), row["metric"]]
        assert row["mean"] == pytest.approx(vals.mean()) and row["std"] == pytest.approx(vals.std(ddof=1))
    again = curves.build_curves(curves.read_runs(out_dir))
    assert list(again["shots"][again["method"] == "zeroshot"].unique()) == ["1", "2"]
    series = curves.curve_series(again, "mae_exp", "few-shot")
    assert [s["method"] for s in series] == ["zeroshot", "ordinalclip:linear"] and series[0]["shots"] == ["1", "2"]


def test_curves_order_shots_and_separate_label_shift():
    rows = [{"method": "ordinalclip", "shots": s, "seed": k, "label_shift": ls, "mae_exp": float(k), "acc_max": 0.5}
            for s in ("all", "16", "2") for k in (0, 1) for ls in ("none", "10 0.5")]
    table = curves.build_curves(rows)
    few = table[(table["regime"] == "few-shot") & (table["metric"] == "mae_exp")]
    assert list(few["shots"]) == ["2", "16", "all"] and list(few["std"]) == [pytest.approx(np.std([0, 1], ddof=1))] * 3
    assert set(table["regime"]) == {"few-shot", "label shift 10 0.5"}
    with pytest.raises(Exception, match="runs.csv"):
        curves.read_runs("/nonexistent-sweep")
