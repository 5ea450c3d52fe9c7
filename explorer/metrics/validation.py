"""Input validation shared by every metric: arrays from numpy, sequences or torch tensors; labels,
prediction pairs and probability matrices checked once, with one sentence on what is wrong."""

from __future__ import annotations

import numpy as np

from explorer.core.errors import ExplorerError


def as_array(x) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor or sequence) as a float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double()
    return np.asarray(x, dtype=np.float64)


def check_pair(y, pred) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels) as flat float arrays of the same, non-zero length, all finite."""
    pred, y = as_array(pred).reshape(-1), as_array(y).reshape(-1)
    if pred.shape != y.shape:
        raise ExplorerError(f"Got {pred.size} predictions for {y.size} labels; they must have the same length.")
    if pred.size == 0:
        raise ExplorerError("Metrics need at least one prediction, got none.")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(y))):
        raise ExplorerError("Predictions and labels must not contain NaN or infinite values.")
    return pred, y


def check_labels(y, num_ranks: int, what: str = "Labels") -> np.ndarray:
    """``y`` as int64 labels, refusing values that are not integers in 0..num_ranks-1."""
    y = as_array(y).reshape(-1)
    if np.any(y != np.round(y)) or np.any(y < 0) or np.any(y > num_ranks - 1):
        raise ExplorerError(f"{what} must be integers in 0..{num_ranks - 1}.")
    return y.astype(np.int64)


def check_probs(y, probs) -> tuple[np.ndarray, np.ndarray]:
    """(N x R probability matrix, int64 labels), refusing shapes, counts or rows that do not fit."""
    P = as_array(probs)
    if P.ndim != 2 or P.shape[0] == 0 or P.shape[1] < 2:
        raise ExplorerError(f"Probabilities must be an N x R matrix with R >= 2, got shape {P.shape}.")
    yv = as_array(y).reshape(-1)
    if yv.size != P.shape[0]:
        raise ExplorerError(f"Got {P.shape[0]} probability rows for {yv.size} labels; they must match.")
    if not np.all(np.isfinite(P)) or np.any(P < 0) or not np.allclose(P.sum(axis=1), 1.0, atol=1e-2):
        raise ExplorerError("Each row of the probability matrix must be non-negative and sum to 1.")
    return P, check_labels(yv, P.shape[1])
