"""Where a checkpoint fails: metrics per slice of a categorical field (with a bootstrap interval of the
slice's value MAE), the largest gap between two slices, the built-in ``band`` field (the true label
in bands) and the per-image error table, worst first.

Pure numpy over any predictor's outputs (see :func:`explorer.analysis.evaluation.score_outputs`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from explorer.core.errors import ExplorerError
from explorer.metrics.panel import metric_panel

BAND = "band"  # the built-in field: the true label in bands
MISSING = "missing"  # the slice of samples without a value for the field
MAX_BANDS = 10
BOOTSTRAP_SAMPLES = 1000


def field_names(samples: Sequence) -> list[str]:
    """The slice fields the samples carry (sorted), then ``band``."""
    return sorted({name for s in samples for name in getattr(s, "fields", {})}) + [BAND]


def _is_years(ranks) -> bool:
    return ranks.unit.strip().lower() in ("year", "years")


def band_edges(ranks) -> np.ndarray:
    """Band edges over the ranks' values: decades for ages in years, else up to 10 bands of equal width."""
    values = ranks.value_array
    lo, hi = float(values.min()), float(values.max())
    if _is_years(ranks):
        return np.arange(math.floor(lo / 10) * 10, math.floor(hi / 10) * 10 + 11, 10, dtype=np.float64)
    count = min(MAX_BANDS, len(np.unique(values)))
    return np.linspace(lo, hi, count + 1) if hi > lo else np.array([lo, lo + 1.0])


def _fmt(x: float) -> str:
    return f"{x:g}"


def band_names(values: np.ndarray, ranks) -> list[str]:
    """The band of each value, named by its range: "20-29" for decades, "1-1.5" for equal widths."""
    edges = band_edges(ranks)
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    if _is_years(ranks):
        return [f"{_fmt(edges[i])}-{_fmt(edges[i] + 9)}" for i in idx]
    return [f"{_fmt(edges[i])}-{_fmt(edges[i + 1])}" for i in idx]


def slice_values(samples: Sequence, labels: np.ndarray, ranks, field: str) -> list[str]:
    """Each sample's value of ``field`` (``band``: its true label's band; a field it lacks: ``missing``)."""
    if field == BAND:
        return band_names(ranks.value_array[np.asarray(labels, dtype=np.int64)], ranks)
    return [getattr(s, "fields", {}).get(field, MISSING) for s in samples]


def check_fields(fields: Sequence[str], samples: Sequence) -> list[str]:
    """``fields`` when every one exists; else one sentence naming the fields there are."""
    there = field_names(samples)
    unknown = [f for f in fields if f not in there]
    if unknown:
        what = "is no field" if len(unknown) == 1 else "are no fields"
        raise ExplorerError(f"There {what} {', '.join(repr(f) for f in unknown)} in this dataset; "
                            f"its fields are {', '.join(there)}.")
    return list(fields)


def bootstrap_ci(errors: np.ndarray, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of ``errors`` (seeded: the same input gives the same interval)."""
    errors = np.asarray(errors, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = errors[rng.integers(0, errors.size, size=(samples, errors.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def _slice_metrics(mask: np.ndarray, probs, values, targets, truth, seed: int) -> dict[str, Any]:
    if not mask.any():
        return {"n": 0}
    errors = np.abs(values[mask] - truth[mask])
    panel = metric_panel(targets[mask], probs[mask])
    return {**panel, "n": int(mask.sum()), "mae_value": float(errors.mean()), "ci95": bootstrap_ci(errors, seed)}


def slice_order(name: str) -> tuple:
    """Bands in numeric order ("9-..." before "10-..."), other values alphabetically, ``missing`` last."""
    head = name.split("-", 1)[0]
    try:
        return (0, float(head), name)
    except ValueError:
        return (2 if name == MISSING else 1, 0.0, name)


def slice_rows(slices: dict[str, dict[str, Any]], field: str, name: str | None = None) -> list[dict[str, Any]]:
    """The table of one field's slices (``{value: metrics}``): images, value MAE with its 95 % interval and
    accuracy per slice (and a ``checkpoint`` column named ``name`` when given)."""
    rows = []
    for value, m in slices.items():
        ci = m.get("ci95") or [None, None]
        rows.append({**({"checkpoint": name} if name else {}), field: value, "n": m["n"], "MAE": m.get("mae_value"),
                     "MAE 95 % low": ci[0], "MAE 95 % high": ci[1], "accuracy": m.get("acc_max")})
    return rows


def largest_gap(slices: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The two non-empty slices whose value MAE differs most: ``{gap, worst, best}`` (None with fewer than two)."""
    full = {name: m["mae_value"] for name, m in slices.items() if m["n"]}
    if len(full) < 2:
        return None
    worst, best = max(full, key=full.get), min(full, key=full.get)
    return {"gap": full[worst] - full[best], "worst": worst, "best": best}


def slice_report(outputs: dict[str, np.ndarray], samples: Sequence, ranks, fields: Sequence[str],
                 known: Sequence | None = None, seed: int = 0) -> dict[str, Any]:
    """``{"slices": {field: {value: metrics}}, "gaps": {field: gap}}`` of one evaluation's ``outputs``
    (labels, probs, values, targets). ``known``: samples whose field values should appear even when none
    of them was evaluated (then ``{"n": 0}``: an empty slice, e.g. after --skip-bad)."""
    labels = np.asarray(outputs["labels"], dtype=np.int64)
    truth = ranks.value_array[labels]
    slices, gaps = {}, {}
    for field in check_fields(fields, samples):
        groups = np.array(slice_values(samples, labels, ranks, field), dtype=object)
        extra = {getattr(s, "fields", {}).get(field, MISSING) for s in known or ()} if field != BAND else set()
        names = sorted(set(groups) | extra, key=slice_order)
        slices[field] = {name: _slice_metrics(groups == name, outputs["probs"], outputs["values"], outputs["targets"], truth, seed)
                         for name in names}
        gaps[field] = largest_gap(slices[field])
    return {"slices": slices, "gaps": gaps}


def worst_first(outputs: dict[str, np.ndarray], ranks, indices=None) -> np.ndarray:
    """``indices`` (all images by default) ordered by absolute error in the labels' units, largest first."""
    labels = np.asarray(outputs["labels"], dtype=np.int64)
    errors = np.abs(outputs["values"] - ranks.value_array[labels])
    indices = np.arange(labels.size) if indices is None else np.asarray(indices, dtype=np.int64)
    return indices[np.argsort(-errors[indices], kind="stable")]


def error_rows(outputs: dict[str, np.ndarray], samples: Sequence, ranks, classes, found: Sequence | None = None,
               extra: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """One row per image, largest absolute error first: path, label, value, error (label units), the top
    class and its probability, every slice field, ``face_found`` when faces were cropped, and the
    ``extra`` per-image columns (e.g. each cut's score)."""
    labels = np.asarray(outputs["labels"], dtype=np.int64)
    errors = np.abs(outputs["values"] - ranks.value_array[labels])
    top = outputs["probs"].argmax(axis=1)
    names = field_names(samples)[:-1]
    rows = []
    for i in worst_first(outputs, ranks):
        row = {"path": samples[i].path, "label": ranks.labels[labels[i]], "value": float(outputs["values"][i]),
               "error": float(errors[i]), "top": classes.labels[top[i]], "top_prob": float(outputs["probs"][i, top[i]])}
        row.update({name: samples[i].fields.get(name, MISSING) for name in names})
        if found is not None:
            row["face_found"] = found[i]
        row.update({name: float(column[i]) for name, column in (extra or {}).items()})
        rows.append(row)
    return rows
