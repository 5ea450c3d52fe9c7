"""Calibration of rank distributions: expected / maximum calibration error of the argmax
confidence (equal-width bins, Guo et al. 2017) and coverage of the predicted central intervals.

Same conventions as :mod:`explorer.metrics.ordinal`: scikit-learn argument order
``metric(y_true, y_prob, *, ...)``, ``y_prob`` an N x R probability matrix, plain float results.
"""

from __future__ import annotations

import numpy as np

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.metrics.validation import check_probs
from explorer.predict.summaries import summarize

DEFAULT_BINS = 15


def _bin_stats(y_true, y_prob, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin (count, mean confidence, accuracy) with bins ((m-1)/M, m/M]; empty bins give NaN."""
    if int(n_bins) < 1:
        raise ExplorerError(f"Calibration needs at least one bin, got {n_bins}.")
    P, y = check_probs(y_true, y_prob)
    conf = P.max(axis=1)
    correct = (P.argmax(axis=1) == y).astype(np.float64)
    # bin m (0-based) holds m/M < conf <= (m+1)/M; a confidence of exactly 0 goes to the first bin
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return count, mean_conf, acc


def ece(y_true, y_prob, *, n_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error: sum over bins of |B|/N * |accuracy(B) - confidence(B)|."""
    count, conf, acc = _bin_stats(y_true, y_prob, n_bins)
    full = count > 0
    return float(np.sum(count[full] / count.sum() * np.abs(acc[full] - conf[full])))


def mce(y_true, y_prob, *, n_bins: int = DEFAULT_BINS) -> float:
    """Maximum calibration error: the largest |accuracy(B) - confidence(B)| over non-empty bins."""
    count, conf, acc = _bin_stats(y_true, y_prob, n_bins)
    full = count > 0
    return float(np.max(np.abs(acc[full] - conf[full])))


def reliability_table(y_true, y_prob, *, n_bins: int = DEFAULT_BINS) -> dict[str, list]:
    """The reliability diagram's data: per bin lower/upper edge, count, mean confidence, accuracy, gap."""
    count, conf, acc = _bin_stats(y_true, y_prob, n_bins)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    return {"bin_lower": edges[:-1].tolist(), "bin_upper": edges[1:].tolist(), "count": count.astype(int).tolist(),
            "confidence": conf.tolist(), "accuracy": acc.tolist(), "gap": (acc - conf).tolist()}


def central_intervals(y_prob, *, coverage: float = 0.9) -> np.ndarray:
    """N x 2 rank indices of each row's central ``coverage`` interval (as :func:`explorer.predict.summaries.summarize`)."""
    P = np.asarray(y_prob, dtype=np.float64)
    return summarize(P, Ranks.integers(P.shape[1]), coverage).interval


def interval_coverage(y_true, y_prob, *, coverage: float = 0.9) -> float:
    """Share of labels inside the predicted central ``coverage`` interval (ideal: ``coverage``)."""
    P, y = check_probs(y_true, y_prob)
    iv = central_intervals(P, coverage=coverage)
    return float(np.mean((iv[:, 0] <= y) & (y <= iv[:, 1])))


def calibration_panel(y_true, y_prob, *, n_bins: int = DEFAULT_BINS, coverage: float = 0.9) -> dict[str, float]:
    """``{"ece", "mce", "interval_coverage"}`` (the keys :func:`explorer.metrics.panel.metric_panel` appends)."""
    return {"ece": ece(y_true, y_prob, n_bins=n_bins), "mce": mce(y_true, y_prob, n_bins=n_bins),
            "interval_coverage": interval_coverage(y_true, y_prob, coverage=coverage)}
