"""Images and prototypes in one map, per-rank distances, confusion matrices and per-rank errors.

:func:`split_predictions` evaluates a checkpoint on a dataset split (through the feature cache,
:func:`explorer.analysis.evaluation.predict_split`) and keeps what the analyses need: features,
labels, probabilities and values. The rest are pure functions of those arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from explorer.analysis.evaluation import SplitPredictions, predict_split
from explorer.core.errors import ExplorerError


def split_predictions(ckpt, backbone, dataset_spec: str, split: str = "test", cache_dir: str | Path | None = None,
                      skip_bad: bool | None = None) -> SplitPredictions:
    """:func:`explorer.analysis.evaluation.predict_split` with ``skip_bad`` as the checkpoint's training run
    had it (the app's default: the maps show the samples the run was scored on)."""
    if skip_bad is None:
        skip_bad = bool((ckpt.meta.get("training") or {}).get("skip_bad", False))
    return predict_split(ckpt, backbone, dataset_spec, split, cache_dir, skip_bad)


def confusion_matrix(y_true, y_pred, num_ranks: int) -> np.ndarray:
    """R x R counts: row = true rank, column = predicted rank (as scikit-learn's, with every rank listed)."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ExplorerError(f"Got {p.size} predictions for {t.size} labels; they must have the same length.")
    R = int(num_ranks)
    if t.size and (t.min() < 0 or p.min() < 0 or t.max() >= R or p.max() >= R):
        raise ExplorerError(f"Labels and predictions must be rank indices in 0..{R - 1}.")
    return np.bincount(t * R + p, minlength=R * R).reshape(R, R)


def per_rank_errors(y_true, y_pred, num_ranks: int) -> list[dict[str, Any]]:
    """Per true rank: n, mean absolute error of ``y_pred``, its std (ddof=1) and standard error (None when empty)."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    err = np.abs(np.asarray(y_pred, dtype=np.float64).reshape(-1) - t)
    rows = []
    for r in range(int(num_ranks)):
        e = err[t == r]
        std = float(np.std(e, ddof=1)) if e.size > 1 else (0.0 if e.size else None)
        rows.append({"rank": r, "n": int(e.size), "mae": float(e.mean()) if e.size else None, "std": std,
                     "sem": None if std is None else std / np.sqrt(e.size)})
    return rows


def prototype_distances(features, labels, prototypes, predicted) -> list[dict[str, Any]]:
    """Per rank r (images labelled r): mean cosine distance (1 - cos) to prototype r and to each image's predicted prototype."""
    from explorer.analysis.geometry import normalise_rows

    X, P = normalise_rows(features), normalise_rows(prototypes)
    y = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(predicted, dtype=np.int64)
    if y.max(initial=0) >= P.shape[0]:
        raise ExplorerError("Every label needs its own prototype row (a binned method's prototypes are not per rank).")
    own = 1.0 - np.sum(X * P[y], axis=1)
    to_pred = 1.0 - np.sum(X * P[pred], axis=1)
    rows = []
    for r in range(P.shape[0]):
        m = y == r
        rows.append({"rank": r, "n": int(m.sum()), "to_own": float(own[m].mean()) if m.any() else None,
                     "to_predicted": float(to_pred[m].mean()) if m.any() else None,
                     "correct": float(np.mean(pred[m] == r)) if m.any() else None})
    return rows


def joint_matrix(features, prototypes, close_gap: bool = False) -> np.ndarray:
    """Images (N rows) then prototypes (R rows), every row L2-normalised: what the joint map projects.

    ``close_gap`` removes CLIP's modality gap first (each group minus its own mean, then normalised
    again), so that the map shows how images and prototypes are ordered rather than that offset.
    """
    from explorer.analysis.geometry import normalise_rows

    X, P = normalise_rows(features), normalise_rows(prototypes)
    if close_gap:
        X, P = normalise_rows(X - X.mean(0)), normalise_rows(P - P.mean(0))
    return np.vstack([X, P])


def joint_layout(features, prototypes, method: str = "pca", dims: int = 2, seed: int = 0,
                 cache_dir: str | Path | None = None, close_gap: bool = False) -> tuple[np.ndarray, np.ndarray, bool]:
    """(image layout N x dims, prototype layout R x dims, from_disk): one projection of both, cached on
    disk by content (the hash of the stacked matrix) like :func:`explorer.analysis.projections.cached_projection`."""
    from explorer.analysis.projections import cached_projection
    from explorer.core.fsio import bytes_digest

    X = joint_matrix(features, prototypes, close_gap)
    key = "joint-" + bytes_digest(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    layout, from_disk = cached_projection(X, key, method, dims, seed, cache_dir=cache_dir)
    n = np.asarray(features).shape[0]
    return layout[:n], layout[n:], from_disk


def joint_map_rows(img_layout, proto_layout, labels, predicted, rank_labels) -> list[dict[str, Any]]:
    """The joint map as table rows (point: image / prototype, coordinates, rank label, predicted rank)."""
    rows = []
    for i, xy in enumerate(np.asarray(img_layout)):
        rows.append({"point": "image", "index": i, **{f"c{d + 1}": float(v) for d, v in enumerate(xy)},
                     "label": rank_labels[int(labels[i])], "predicted": rank_labels[int(predicted[i])]})
    for r, xy in enumerate(np.asarray(proto_layout)):
        rows.append({"point": "prototype", "index": r, **{f"c{d + 1}": float(v) for d, v in enumerate(xy)},
                     "label": rank_labels[r] if r < len(rank_labels) else str(r), "predicted": None})
    return rows
