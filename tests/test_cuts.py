"""Decisions at a cut-point (eval --cut) and the model-by-slice matrix (compare --by): every figure
checked against an independent computation from `predict --json` probabilities (scikit-learn's
roc_auc_score / average_precision_score as the oracle for AUC and AP, brute force for the rest)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from explorer import cli
from explorer.analysis import cuts
from explorer.data.datasets import open_dataset

ROOT = Path(__file__).resolve().parents[1]
SITES = ["a", "b", "c"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``ordinal-explorer ARGS`` in this process (the real parser and commands), its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _write_csv(root: Path, rows: list[dict]) -> Path:
    with open(root / "d.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "d.csv"


@pytest.fixture(scope="module")
def ages(tmp_path_factory):
    """30 noise images with ages 3-90 and a site field (site c has one image), and the zero-shot age preset."""
    root = tmp_path_factory.mktemp("cuts")
    (root / "img").mkdir()
    rows = []
    for i in range(30):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        rows.append({"path": f"img/{i}.png", "label": 3 + 3 * i, "site": "c" if i == 7 else SITES[i % 2]})
    _write_csv(root, rows)
    out = _cli("zero-shot", "--preset", "age", "--backbone", "demo", "--out", str(root / "age.safetensors"))
    assert out.returncode == 0, out.stderr
    return root


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    """The dots:20 test images as PNG files in a CSV (the same pixels eval renders), for the bundled checkpoints."""
    root = tmp_path_factory.mktemp("dots")
    (root / "img").mkdir()
    dataset = open_dataset("dots:20")
    rows = []
    for i, sample in enumerate(dataset.samples[::7]):
        dataset.load_image(sample).save(root / "img" / f"{i}.png")
        rows.append({"path": f"img/{i}.png", "label": sample.label, "site": SITES[i % 3]})
    _write_csv(root, rows)
    return root


def _eval(ckpt: Path, root: Path, *extra: str) -> dict:
    out = _cli("eval", str(ckpt), f"csv:{root / 'd.csv'}", "--split", "all", "--cache-dir", str(root / "cache"), "--json", *extra)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _predicted(ckpt: Path, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(probs, label values) of every image from `predict --json`, in the CSV's order."""
    with open(root / "d.csv") as f:
        rows = list(csv.DictReader(f))
    out = _cli("predict", str(ckpt), *[str(root / r["path"]) for r in rows], "--no-face", "--json")
    assert out.returncode == 0, out.stderr
    return np.array([p["probs"] for p in json.loads(out.stdout)]), np.array([float(r["label"]) for r in rows])


def _rates(scores, above, threshold):
    called = scores >= threshold
    return np.mean(called[~above]), np.mean(~called[above])


def _brute_target_threshold(scores, above, recall):
    below = scores[~above]
    candidates = np.unique(np.concatenate([scores, np.nextafter(scores, np.inf)]))
    return min(t for t in candidates if np.mean(below < t) >= recall)


@pytest.mark.parametrize("cut", [18.0, 50.0])
def test_cut_report_matches_an_independent_computation(ages, cut):
    ckpt = ages / "age.safetensors"
    result = _eval(ckpt, ages, "--cut", f"{cut:g}", "--target-recall", "0.9")["cuts"][f"{cut:g}"]
    probs, truth = _predicted(ckpt, ages)
    scores = probs[:, np.arange(101) >= cut].sum(axis=1)  # P(age >= cut): ranks 0..100 years
    above = truth >= cut
    assert (result["below"], result["at_or_above"]) == (int((~above).sum()), int(above.sum()))
    assert result["auc"] == pytest.approx(roc_auc_score(above, scores), abs=1e-6)
    assert result["average_precision"] == pytest.approx(average_precision_score(above, scores), abs=1e-6)
    d = result["default"]
    assert d["threshold"] == 0.5 and (d["below_called_above"], d["above_called_below"]) == pytest.approx(_rates(scores, above, 0.5))
    t = result["target_recall"]
    assert t["recall"] == 0.9 and t["threshold"] == pytest.approx(_brute_target_threshold(scores, above, 0.9), abs=1e-6)
    assert np.mean(scores[~above] < t["threshold"]) >= 0.9
    assert (t["below_called_above"], t["above_called_below"]) == pytest.approx(_rates(scores, above, t["threshold"]), abs=1e-9)
    for point in (d, t):
        for rate in cuts.RATES:
            lo, hi = point["ci95"][rate]
            assert lo <= point[rate] + 1e-12 and point[rate] <= hi + 1e-12


def test_numclip_spreads_each_concepts_mass_over_its_ranks(dots):
    ckpt = ROOT / "checkpoints" / "numclip.safetensors"
    result = _eval(ckpt, dots, "--cut", "5")["cuts"]["5"]
    probs, truth = _predicted(ckpt, dots)  # over the 5 dots concepts, starting at 0, 3, 7, 12, 16 dots
    starts = [0, 3, 7, 12, 16]
    members = [[r for r in range(21) if (starts + [21])[k] <= r < (starts + [21])[k + 1]] for k in range(5)]
    shares = np.array([np.mean(np.array(m) >= 5) for m in members])  # the "a few" bin 3..6 is half at or above 5
    scores = probs @ shares
    above = truth >= 5
    assert result["auc"] == pytest.approx(roc_auc_score(above, scores), abs=1e-6)
    assert (result["default"]["below_called_above"], result["default"]["above_called_below"]) == pytest.approx(_rates(scores, above, 0.5))


def test_errors_rows_carry_each_cuts_score(ages, tmp_path):
    ckpt = ages / "age.safetensors"
    _eval(ckpt, ages, "--cut", "18", "--cut", "60", "--errors", str(tmp_path / "e.csv"))
    with open(tmp_path / "e.csv") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    probs, _ = _predicted(ckpt, ages)
    for i in range(30):
        row = rows[str(ages / "img" / f"{i}.png")] if str(ages / "img" / f"{i}.png") in rows else rows[f"img/{i}.png"]
        assert float(row["p_at_or_above_18"]) == pytest.approx(probs[i, 18:].sum(), abs=1e-6)
        assert float(row["p_at_or_above_60"]) == pytest.approx(probs[i, 60:].sum(), abs=1e-6)


def test_a_cut_with_no_image_below_leaves_those_rates_null_with_a_sentence(ages):
    result = _eval(ages / "age.safetensors", ages, "--cut", "2")["cuts"]["2"]  # every label is at least 3
    assert result["below"] == 0 and result["at_or_above"] == 30 and result["auc"] is None and result["average_precision"] is None
    assert result["default"]["below_called_above"] is None and result["default"]["ci95"]["below_called_above"] is None
    assert result["default"]["above_called_below"] is not None
    assert result["target_recall"]["threshold"] is None and "No image is below the cut" in result["note"]


@pytest.mark.parametrize("cut", ["0", "100", "-5", "150"])
def test_a_cut_outside_or_at_the_edge_of_the_ranks_is_one_sentence(ages, cut):
    out = _cli("eval", str(ages / "age.safetensors"), f"csv:{ages / 'd.csv'}", "--split", "all", "--cut", cut,
               "--cache-dir", str(ages / "cache"))
    assert out.returncode == 2 and "must lie strictly inside the ranks (0 to 100 years)" in out.stderr
    assert out.stderr.count("\n") == 1


def test_cut_rates_per_slice_including_a_slice_of_one_image(ages):
    result = _eval(ages / "age.safetensors", ages, "--cut", "30", "--by", "site")["cuts"]["30"]
    probs, truth = _predicted(ages / "age.safetensors", ages)
    scores, above = probs[:, 30:].sum(axis=1), truth >= 30
    sites = np.array(["c" if i == 7 else SITES[i % 2] for i in range(30)])
    per_site = result["slices"]["site"]
    assert per_site["c"]["n"] == 1 and per_site["c"]["below"] == 1  # image 7: age 24
    for site in ("a", "b", "c"):
        m = sites == site
        expected = _rates(scores[m], above[m], 0.5) if above[m].any() else (_rates(scores[m], above[m], 0.5)[0], None)
        got = per_site[site]["default"]
        assert got["below_called_above"] == pytest.approx(expected[0])
        assert (got["above_called_below"] is None) == (expected[1] is None)


def test_compare_matrix_cells_are_each_checkpoints_eval_slices(dots):
    names = ["ordinalclip-linear", "coop", "numclip"]
    paths = [str(ROOT / "checkpoints" / f"{n}.safetensors") for n in names]
    out = _cli("compare", *paths, "--on", f"csv:{dots / 'd.csv'}", "--split", "all", "--by", "site",
               "--cache-dir", str(dots / "cache"), "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["by"] == "site" and list(result["matrix"]) == names
    for name, path in zip(names, paths):
        slices = _eval(Path(path), dots, "--by", "site")["slices"]["site"]
        assert result["matrix"][name] == {v: {k: m[k] for k in ("n", "mae_value", "ci95")} for v, m in slices.items()}


def test_bad_target_recall_is_one_sentence(ages):
    out = _cli("eval", str(ages / "age.safetensors"), f"csv:{ages / 'd.csv'}", "--cut", "18", "--target-recall", "1.5")
    assert out.returncode == 2 and "target recall must lie between 0 and 1" in out.stderr


def test_curves_operating_points_and_nearest_images_match_an_independent_computation(ages):
    """What the Decide section draws: scikit-learn's ROC and PR curves, each operating point a vertex of the
    ROC curve with its brute-force rates and precision, and the images nearest each threshold."""
    from explorer.store.checkpoints import load_checkpoint

    ckpt = ages / "age.safetensors"
    probs, truth = _predicted(ckpt, ages)
    d = cuts.decision({"labels": truth.astype(np.int64), "probs": probs}, load_checkpoint(ckpt).predictor(), 30, 0.9, nearest=4)
    scores, above = probs[:, 30:].sum(axis=1), truth >= 30
    assert d["scores"] == pytest.approx(scores, abs=1e-9) and list(d["above"]) == list(above)
    fpr, tpr, _ = roc_curve(above, scores, drop_intermediate=False)
    precision, recall, _ = precision_recall_curve(above, scores)
    assert d["curves"]["fpr"] == pytest.approx(fpr) and d["curves"]["tpr"] == pytest.approx(tpr)
    assert d["curves"]["precision"] == pytest.approx(precision) and d["curves"]["recall"] == pytest.approx(recall)
    for name in ("default", "target_recall"):
        t = d["report"][name]["threshold"]
        called = scores >= t
        p = d["points"][name]
        assert (p["fpr"], p["tpr"]) == pytest.approx((np.mean(called[~above]), np.mean(called[above])))
        assert p["recall"] == p["tpr"] and p["precision"] == pytest.approx(np.mean(above[called]))
        assert np.any(np.isclose(fpr, p["fpr"]) & np.isclose(tpr, p["tpr"]))  # a vertex of the drawn curve
        below_side = sorted((i for i in range(30) if scores[i] < t), key=lambda i: (t - scores[i], i))[:4]
        above_side = sorted((i for i in range(30) if scores[i] >= t), key=lambda i: (scores[i] - t, i))[:4]
        assert d["nearest"][name] == {"below": below_side, "at_or_above": above_side}


def test_no_curve_without_both_sides_and_no_point_without_a_threshold():
    scores, above = np.array([0.2, 0.7, 0.9]), np.array([True, True, True])
    assert cuts.curves(scores, above) is None
    assert cuts.curve_point(scores, above, None) == dict.fromkeys(("fpr", "tpr", "precision", "recall"))
    assert cuts.curve_point(scores, above, 0.5) == {"fpr": None, "tpr": pytest.approx(2 / 3), "precision": 1.0, "recall": pytest.approx(2 / 3)}
    assert cuts.curve_point(scores, ~above, 0.95)["precision"] is None  # nothing called at-or-above
