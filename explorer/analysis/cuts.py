"""Decisions at a cut-point T on the ordinal scale: is this person under 18? is this grade >= 2?

Every image gets the score ``s = P(y >= T)``, the predicted probability of the labels at or above T:
the sum of its class probabilities, each class's mass spread evenly over the label ranks it covers
(a rank method's class is one rank, so this is exactly the sum of p(rank) over the ranks >= T; a
binned method such as NumCLIP spreads a concept bin's mass over the ranks inside it). A score
``s >= threshold`` is called at-or-above.

For each cut: the counts below and at-or-above T, ROC AUC and average precision of the score
(at-or-above is the positive class), and two operating points with their error rates -- how many
below-T images are called at-or-above (ages: minors called adults) and the reverse -- each with a
seeded percentile-bootstrap 95 % interval (resampling the images of that side at the fixed
threshold): the default (``s >= 0.5``) and the target-recall threshold, the smallest at which at
least that fraction of the below-T images is called below. A rate that cannot be computed (no image
on its side) is null, with a note.

What the pages and the report draw of a cut comes from here too: the ROC and precision-recall curves
of the score, where each operating point sits on them and the images nearest its threshold
(:func:`decision`, :func:`score_view`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from explorer.analysis.slices import bootstrap_ci, slice_order, slice_values
from explorer.core.errors import ExplorerError

DEFAULT_THRESHOLD = 0.5
DEFAULT_TARGET_RECALL = 0.95
RATES = ("below_called_above", "above_called_below")


def cut_key(cut: float) -> str:
    """The JSON key of a cut: ``18``, ``2.5``."""
    return f"{float(cut):g}"


def check_cut(cut: float, ranks) -> float:
    """``cut`` as a float when it lies strictly inside the ranks' values; one sentence otherwise."""
    values = ranks.value_array
    lo, hi = float(values.min()), float(values.max())
    unit = f" {ranks.unit}" if ranks.unit else ""
    if not (math.isfinite(cut) and lo < cut < hi):
        raise ExplorerError(f"The cut {cut:g} must lie strictly inside the ranks ({lo:g} to {hi:g}{unit}): "
                            "both sides need ranks.")
    return float(cut)


def check_target_recall(recall: float) -> float:
    """``recall`` when it lies in (0, 1]; one sentence otherwise."""
    if not (0 < recall <= 1):
        raise ExplorerError(f"The target recall must lie between 0 and 1 (got {recall:g}).")
    return float(recall)


def class_shares(predictor, cut: float) -> np.ndarray:
    """For each class of ``predictor``: the share of its label ranks that lie at or above ``cut`` (a class
    no rank falls in counts as at-or-above when its own value is)."""
    values = predictor.ranks.value_array
    members = predictor.class_targets(np.arange(values.size))
    shares = []
    for k, own in enumerate(predictor.classes.value_array):
        inside = values[members == k]
        shares.append(float(np.mean(inside >= cut)) if inside.size else float(own >= cut))
    return np.asarray(shares, dtype=np.float64)


def cut_scores(probs: np.ndarray, predictor, cut: float) -> np.ndarray:
    """P(y >= cut) of each image from its class probabilities (N x K)."""
    return np.asarray(probs, dtype=np.float64) @ class_shares(predictor, cut)


def target_threshold(scores_below: np.ndarray, recall: float) -> float:
    """The smallest threshold at which at least ``recall`` of the below-cut images score below it."""
    ordered = np.sort(np.asarray(scores_below, dtype=np.float64))
    k = max(1, math.ceil(recall * ordered.size - 1e-9))
    return float(np.nextafter(ordered[k - 1], np.inf))


def operating_point(scores: np.ndarray, above: np.ndarray, threshold: float, seed: int = 0, intervals: bool = True) -> dict[str, Any]:
    """The two error rates at ``threshold`` and (``intervals``) their bootstrap 95 % intervals (None where a side is empty)."""
    called = scores >= threshold
    wrong = {"below_called_above": called[~above], "above_called_below": ~called[above]}
    out = {"threshold": float(threshold), **{k: float(v.mean()) if v.size else None for k, v in wrong.items()}}
    if intervals:
        out["ci95"] = {k: bootstrap_ci(v.astype(np.float64), seed) if v.size else None for k, v in wrong.items()}
    return out


def _ranking(scores: np.ndarray, above: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if above.all() or not above.any():
        return {"auc": None, "average_precision": None}
    return {"auc": float(roc_auc_score(above, scores)), "average_precision": float(average_precision_score(above, scores))}


def cut_report(scores: np.ndarray, above: np.ndarray, target_recall: float = DEFAULT_TARGET_RECALL,
               seed: int = 0) -> dict[str, Any]:
    """Counts, AUC, average precision and the default and target-recall operating points of one cut."""
    scores, above = np.asarray(scores, dtype=np.float64), np.asarray(above, dtype=bool)
    out: dict[str, Any] = {"below": int((~above).sum()), "at_or_above": int(above.sum()), **_ranking(scores, above),
                           "default": operating_point(scores, above, DEFAULT_THRESHOLD, seed)}
    if out["below"]:
        threshold = target_threshold(scores[~above], target_recall)
        out["target_recall"] = {"recall": target_recall, **operating_point(scores, above, threshold, seed)}
    else:
        out["target_recall"] = {"recall": target_recall, "threshold": None, **dict.fromkeys(RATES),
                                "ci95": dict.fromkeys(RATES)}
    missing = [side for side, n in (("below", out["below"]), ("at or above", out["at_or_above"])) if not n]
    if missing:
        out["note"] = (f"No image is {missing[0]} the cut, so AUC, average precision and the rates that need "
                       f"those images are not computed.")
    return out


def slice_rates(scores: np.ndarray, above: np.ndarray, groups: Sequence[str], thresholds: dict[str, float]) -> dict[str, Any]:
    """Per slice value: counts and both error rates at each named threshold (``{"default": 0.5, ...}``)."""
    groups = np.asarray(groups, dtype=object)
    out = {}
    for name in sorted(set(groups.tolist()), key=lambda g: slice_order(str(g))):
        mask = groups == name
        row: dict[str, Any] = {"n": int(mask.sum()), "below": int((mask & ~above).sum()), "at_or_above": int((mask & above).sum())}
        for label, threshold in thresholds.items():
            point = operating_point(scores[mask], above[mask], threshold, intervals=False) if threshold is not None else {}
            row[label] = {k: point.get(k) for k in RATES}
        out[str(name)] = row
    return out


def cuts_report(outputs: dict[str, np.ndarray], predictor, cuts: Sequence[float], target_recall: float = DEFAULT_TARGET_RECALL,
                samples: Sequence | None = None, fields: Sequence[str] = (), seed: int = 0) -> dict[str, Any]:
    """``{T: cut_report, ...}`` of one evaluation's ``outputs`` (labels, probs), with ``slices`` per field
    when ``fields`` are given (the rates of each slice at the two thresholds)."""
    ranks = predictor.ranks
    labels = np.asarray(outputs["labels"], dtype=np.int64)
    truth = ranks.value_array[labels]
    out = {}
    for cut in cuts:
        cut = check_cut(float(cut), ranks)
        scores, above = cut_scores(outputs["probs"], predictor, cut), truth >= cut
        report = cut_report(scores, above, check_target_recall(target_recall), seed)
        if fields:
            thresholds = {"default": DEFAULT_THRESHOLD, "target_recall": report["target_recall"]["threshold"]}
            report["slices"] = {f: slice_rates(scores, above, slice_values(samples, labels, ranks, f), thresholds) for f in fields}
        out[cut_key(cut)] = report
    return out


def score_columns(probs: np.ndarray, predictor, cuts: Sequence[float]) -> dict[str, np.ndarray]:
    """``{"p_at_or_above_T": scores}`` for each cut (the extra columns of the per-image error table)."""
    return {f"p_at_or_above_{cut_key(c)}": cut_scores(probs, predictor, check_cut(float(c), predictor.ranks)) for c in cuts}


def curves(scores: np.ndarray, above: np.ndarray) -> dict[str, Any] | None:
    """The ROC curve (false / true positive rates) and the precision-recall curve of the score, at-or-above
    being the positive class (scikit-learn's ``roc_curve`` and ``precision_recall_curve``); None when one
    side of the cut has no image."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    scores, above = np.asarray(scores, dtype=np.float64), np.asarray(above, dtype=bool)
    if above.all() or not above.any():
        return None
    fpr, tpr, _ = roc_curve(above, scores, drop_intermediate=False)
    precision, recall, _ = precision_recall_curve(above, scores)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "precision": precision.tolist(), "recall": recall.tolist()}


def curve_point(scores: np.ndarray, above: np.ndarray, threshold: float | None) -> dict[str, float | None]:
    """Where ``threshold`` sits on both curves: false and true positive rates (the below-called-above rate
    and one less the above-called-below rate), precision and recall of the at-or-above calls (None where
    undefined: no image on a side, or none called at-or-above)."""
    if threshold is None:
        return dict.fromkeys(("fpr", "tpr", "precision", "recall"))
    called = np.asarray(scores, dtype=np.float64) >= threshold
    above = np.asarray(above, dtype=bool)
    tpr = float(called[above].mean()) if above.any() else None
    return {"fpr": float(called[~above].mean()) if (~above).any() else None, "tpr": tpr,
            "precision": float(above[called].mean()) if called.any() else None, "recall": tpr}


def nearest_to_threshold(scores: np.ndarray, threshold: float, count: int) -> dict[str, list[int]]:
    """The ``count`` images nearest ``threshold`` on either side, nearest first: ``below`` (called below,
    score < threshold) and ``at_or_above`` (score >= threshold); ties keep the images' order."""
    scores = np.asarray(scores, dtype=np.float64)
    distance = np.abs(scores - threshold)
    order = np.argsort(distance, kind="stable")
    called = scores[order] >= threshold
    return {"below": order[~called][:count].tolist(), "at_or_above": order[called][:count].tolist()}


def score_view(outputs: dict[str, np.ndarray], predictor, cut: float, thresholds: dict[str, float | None],
               nearest: int = 6) -> dict[str, Any]:
    """Each image's ``scores`` and side of ``cut`` (``above``), the ``curves``, where each named threshold
    (``{"default": 0.5, "target_recall": t}``) sits on them (``points``) and the images ``nearest`` it on
    either side."""
    scores = cut_scores(outputs["probs"], predictor, float(cut))
    above = predictor.ranks.value_array[np.asarray(outputs["labels"], dtype=np.int64)] >= float(cut)
    return {"scores": scores, "above": above, "curves": curves(scores, above),
            "points": {name: curve_point(scores, above, t) for name, t in thresholds.items()},
            "nearest": {name: nearest_to_threshold(scores, t, nearest) if t is not None else {"below": [], "at_or_above": []}
                        for name, t in thresholds.items()}}


def decision(outputs: dict[str, np.ndarray], predictor, cut: float, target_recall: float = DEFAULT_TARGET_RECALL,
             samples: Sequence | None = None, fields: Sequence[str] = (), nearest: int = 6, seed: int = 0) -> dict[str, Any]:
    """Everything a page shows of one cut: ``report`` (the :func:`cuts_report` entry, with ``slices`` per
    field) and the :func:`score_view` of its two operating points."""
    key = cut_key(check_cut(float(cut), predictor.ranks))
    report = cuts_report(outputs, predictor, [cut], target_recall, samples, fields, seed)[key]
    thresholds = {name: report[name]["threshold"] for name in ("default", "target_recall")}
    return {"cut": float(cut), "report": report, **score_view(outputs, predictor, cut, thresholds, nearest)}


def _point_label(point: str, report: dict[str, Any]) -> str:
    return "P ≥ 0.5" if point == "default" else f"recall {report[point]['recall']:g}"


def operating_rows(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The table of one cut's operating points, one row per checkpoint (``reports``: name -> its cut report)
    and operating point: the threshold, both rates with their 95 % intervals, AUC, AP and the counts."""
    rows = []
    for name, c in reports.items():
        for point in ("default", "target_recall"):
            p = c[point]
            row: dict[str, Any] = {"checkpoint": name, "operating point": _point_label(point, c), "threshold": p["threshold"]}
            for rate in RATES:
                lo, hi = p["ci95"][rate] or (None, None)
                label = rate.replace("_", " ")
                row.update({label: p[rate], f"{label} 95 % low": lo, f"{label} 95 % high": hi})
            row.update({"AUC": c["auc"], "average precision": c["average_precision"], "below": c["below"], "at or above": c["at_or_above"]})
            rows.append(row)
    return rows


def slice_rate_rows(reports: dict[str, dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """The table of one cut's rates per slice of ``field``, one row per checkpoint and slice value: the
    counts and both rates at both operating points (None where a side of the slice is empty)."""
    rows = []
    for name, c in reports.items():
        for value, m in c["slices"][field].items():
            row: dict[str, Any] = {"checkpoint": name, field: value, "n": m["n"], "below": m["below"], "at or above": m["at_or_above"]}
            for point in ("default", "target_recall"):
                row.update({f"{rate.replace('_', ' ')} ({_point_label(point, c)})": m[point][rate] for rate in RATES})
            rows.append(row)
    return rows
