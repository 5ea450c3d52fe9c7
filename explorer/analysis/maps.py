"""Images and prototypes in one map, per-rank distances, confusion matrices and per-rank errors.

:func:`split_predictions` evaluates a checkpoint on a dataset split (through the feature cache)
and keeps what the analyses need: features, labels and probabilities. The rest are pure
functions of those arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from explorer.core.errors import ExplorerError


@dataclass
class SplitPredictions:
    """A checkpoint's predictions on one dataset split."""

    checkpoint: str
    dataset: str
    split: str
    features: np.ndarray  # N x E, normalised
    labels: np.ndarray  # N ints in 0..R-1
    probs: np.ndarray  # N x C over the prototype rows (C = R unless the method bins)
    targets: np.ndarray | None = None  # N ints in 0..C-1: the prototype row of each label (= labels unless binned)
    note: str | None = None  # how the dataset's labels were matched to the checkpoint's ranks (None: its own ranks)

    def __post_init__(self) -> None:
        if self.targets is None:
            self.targets = self.labels

    @property
    def argmax(self) -> np.ndarray:
        """Most probable row (rank) per image."""
        return self.probs.argmax(axis=1)

    @property
    def expected(self) -> np.ndarray:
        """Expected rank index per image."""
        return self.probs @ np.arange(self.probs.shape[1], dtype=np.float64)


def split_predictions(ckpt, backbone, dataset_spec: str, split: str = "test", cache_dir: str | Path | None = None,
                      skip_bad: bool | None = None) -> SplitPredictions:
    """Features, labels and probabilities of ``ckpt`` on ``split`` of ``dataset_spec`` (the same
    samples :func:`explorer.analysis.evaluation.evaluate_checkpoint` scores)."""
    import torch

    from explorer.analysis.evaluation import crop_faces_for, open_eval_split
    from explorer.data.features import FeatureCache

    if skip_bad is None:  # as the checkpoint's training run did
        skip_bad = bool((ckpt.meta.get("training") or {}).get("skip_bad", False))
    es = open_eval_split(ckpt, dataset_spec, split, skip_bad)
    crop_faces_for(ckpt, es.dataset)  # as eval does
    feats = FeatureCache(backbone, cache_dir).features(es.dataset, es.samples)
    predictor = ckpt.predictor()
    with torch.no_grad():
        probs = torch.softmax(predictor.logits(feats), dim=-1).cpu().numpy().astype(np.float64)
    feats = torch.nn.functional.normalize(feats.float(), dim=-1).numpy().astype(np.float64)
    return SplitPredictions(ckpt.name, dataset_spec, split, feats, es.labels, probs, predictor.class_targets(es.labels),
                            es.note())


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
    """The joint map as table rows (kind image / prototype, coordinates, rank label, predicted rank)."""
    rows = []
    for i, xy in enumerate(np.asarray(img_layout)):
        rows.append({"kind": "image", "index": i, **{f"c{d + 1}": float(v) for d, v in enumerate(xy)},
                     "label": rank_labels[int(labels[i])], "predicted": rank_labels[int(predicted[i])]})
    for r, xy in enumerate(np.asarray(proto_layout)):
        rows.append({"kind": "prototype", "index": r, **{f"c{d + 1}": float(v) for d, v in enumerate(xy)},
                     "label": rank_labels[r] if r < len(rank_labels) else str(r), "predicted": None})
    return rows
