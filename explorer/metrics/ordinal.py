"""Ordinal-regression metrics for predictions against integer labels 0..R-1.

Pure functions with scikit-learn's argument order: ``metric(y_true, y_pred, *, ...)``. Inputs may
be numpy arrays, sequences or torch tensors; results are plain Python floats.
Undefined values are returned as ``float('nan')`` and never silently replaced: a Spearman,
Kendall or QWK value is NaN when it is undefined (e.g. constant predictions or labels).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from explorer.core.errors import ExplorerError
from explorer.metrics.validation import as_array, check_labels, check_pair, check_probs


def mae(y_true, y_pred) -> float:
    """Mean absolute error."""
    pred, y = check_pair(y_true, y_pred)
    return float(np.mean(np.abs(pred - y)))


def accuracy(y_true, y_pred) -> float:
    """Fraction of predictions that round (half to even) to the label."""
    pred, y = check_pair(y_true, y_pred)
    return float(np.mean(np.round(pred) == y))


def cs_at_k(y_true, y_pred, *, k: float) -> float:
    """Cumulative score: fraction with |pred - y| <= k (k = 1 is the 1-off accuracy)."""
    pred, y = check_pair(y_true, y_pred)
    return float(np.mean(np.abs(pred - y) <= k))


def amae_mmae(y_true, y_pred) -> tuple[float, float]:
    """(mean, max) over the classes present in ``y_true`` of the per-class MAE."""
    pred, y = check_pair(y_true, y_pred)
    per_class = [np.mean(np.abs(pred[y == c] - c)) for c in np.unique(y)]
    return float(np.mean(per_class)), float(np.max(per_class))


def qwk(y_true, y_pred, *, num_ranks: int) -> float:
    """Quadratic weighted kappa of integer predictions vs labels in 0..num_ranks-1 (scikit-learn's
    ``cohen_kappa_score``; NaN when undefined, e.g. a single class on both sides)."""
    from sklearn.metrics import cohen_kappa_score

    pred_int, y = check_pair(y_true, y_pred)
    if int(num_ranks) < 2:
        raise ExplorerError(f"QWK needs at least 2 ranks, got {num_ranks}.")
    R = int(num_ranks)
    p, t = check_labels(pred_int, R, "QWK predictions"), check_labels(y, R)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined kappa: NaN, reported as such
        value = cohen_kappa_score(t, p, labels=list(range(R)), weights="quadratic")
    return float(value) if np.isfinite(value) else float("nan")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / den) if den > 0 else float("nan")


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation (Pearson of average ranks); NaN if either side is constant."""
    pred, y = check_pair(y_true, y_pred)
    from scipy import stats  # imported on use: scipy.stats takes about a second, and a page opening needs none of it

    return _pearson(stats.rankdata(pred), stats.rankdata(y))


def kendall(y_true, y_pred) -> float:
    """Kendall tau-b rank correlation; NaN if either side is constant."""
    pred, y = check_pair(y_true, y_pred)
    if pred.size < 2 or np.all(pred == pred[0]) or np.all(y == y[0]):
        return float("nan")
    from scipy import stats

    return float(stats.kendalltau(pred, y).statistic)


def ranked_probability_score(y_true, y_prob) -> float:
    """Mean over examples of (1/(R-1)) * sum_k (CDF_pred[k] - CDF_true[k])^2, k = 0..R-2."""
    P, y = check_probs(y_true, y_prob)
    R = P.shape[1]
    cdf_pred = np.cumsum(P, axis=1)[:, : R - 1]
    cdf_true = (y[:, None] <= np.arange(R - 1)[None, :]).astype(np.float64)
    return float(np.mean(np.sum((cdf_pred - cdf_true) ** 2, axis=1) / (R - 1)))


def aggregate(runs) -> dict:
    """Per-metric {"mean", "std" (ddof=1), "ci95" (t half-width), "n"} over runs (one dict per seed).

    A metric is aggregated over the runs that report it as a number; with one run std and
    ci95 are 0.0. NaN values propagate into mean/std/ci95.
    """
    runs = list(runs)
    if not runs:
        raise ExplorerError("Aggregation needs at least one run, got none.")
    from scipy import stats

    keys = list(dict.fromkeys(k for r in runs for k in r))
    out = {}
    for k in keys:
        vals = [r[k] for r in runs if k in r and isinstance(r[k], (int, float, np.number)) and not isinstance(r[k], bool)]
        if not vals:
            continue
        v = np.asarray(vals, dtype=np.float64)
        n = v.size
        std = float(np.std(v, ddof=1)) if n > 1 else 0.0
        ci = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else 0.0
        out[k] = {"mean": float(np.mean(v)), "std": std, "ci95": ci, "n": n}
    return out


def format_mean_std(agg: dict, metric: str, digits: int = 2) -> str:
    """Format an aggregated metric as "mean ± std", e.g. "2.32 ± 0.05"."""
    if metric not in agg:
        raise ExplorerError(f"Metric {metric!r} is not in the aggregated results.")
    a = agg[metric]
    return f"{a['mean']:.{digits}f} ± {a['std']:.{digits}f}"


def epsilon_error(y_true, y_pred, sigma) -> float:
    """ChaLearn LAP epsilon-error: mean of 1 - exp(-(y_pred - mu)^2 / (2 sigma^2)), mu = y_true (apparent age).

    ``sigma`` is each sample's apparent-age spread (standard deviation); all three are in the same
    units (e.g. years) and sigma must be positive. 0 is perfect, values near 1 are far off.
    """
    pred, mu = check_pair(y_true, y_pred)
    s = as_array(sigma).reshape(-1)
    if s.shape != mu.shape:
        raise ExplorerError(f"Got {s.size} spreads for {mu.size} labels; give one spread (sigma) per sample.")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ExplorerError("Every spread (sigma) must be a positive finite number.")
    return float(np.mean(1.0 - np.exp(-((pred - mu) ** 2) / (2.0 * s**2))))
