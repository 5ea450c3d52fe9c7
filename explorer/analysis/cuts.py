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
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from explorer.analysis.slices import MISSING, bootstrap_ci, slice_values
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


def operating_point(scores: np.ndarray, above: np.ndarray, threshold: float, seed: int = 0) -> dict[str, Any]:
    """The two error rates at ``threshold`` and their bootstrap 95 % intervals (None where a side is empty)."""
    called = scores >= threshold
    wrong = {"below_called_above": called[~above], "above_called_below": ~called[above]}
    return {"threshold": float(threshold),
            **{k: float(v.mean()) if v.size else None for k, v in wrong.items()},
            "ci95": {k: bootstrap_ci(v.astype(np.float64), seed) if v.size else None for k, v in wrong.items()}}


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
    for name in sorted(set(groups.tolist()), key=lambda g: (g == MISSING, str(g))):
        mask = groups == name
        row: dict[str, Any] = {"n": int(mask.sum()), "below": int((mask & ~above).sum()), "at_or_above": int((mask & above).sum())}
        for label, threshold in thresholds.items():
            point = operating_point(scores[mask], above[mask], threshold) if threshold is not None else {}
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
