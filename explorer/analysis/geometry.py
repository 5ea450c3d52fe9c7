"""Geometry of rank prototypes: similarity, ordinality and low-dimensional projections.

``P`` is an R x E matrix with one prototype (e.g. a rank text embedding) per row; ``S`` is
an N x N similarity matrix between prototypes. Everything here is numpy; torch tensors
are accepted as inputs and converted.

Ordinality follows the OrdinalCLIP definition: with N prototypes and m = N - 1, for
0 <= i <= j <= m - 1 let C[i, j] = [S[i, j] > S[i, j + 1]] (walking right from rank i the
similarity must strictly fall). ordinality(s) is the mean of C over pairs with
i <= j < i + s; the all-pairs value uses s = m and the violation rate is 1 - that value.
"""

from __future__ import annotations

import numpy as np

from explorer.core.errors import ExplorerError
from explorer.metrics.validation import as_array

SIMILARITY_VIEWS = ("cosine", "max_normalised", "softmax")
PROJECTIONS = ("pca", "umap", "tsne")


def _matrix(P, what: str = "prototype matrix") -> np.ndarray:
    P = as_array(P)
    if P.ndim != 2 or P.shape[0] == 0 or P.shape[1] == 0:
        raise ExplorerError(f"The {what} must be a non-empty 2-D array, got shape {P.shape}.")
    if not np.all(np.isfinite(P)):
        raise ExplorerError(f"The {what} contains NaN or infinite values.")
    return P


def _square(S) -> np.ndarray:
    S = _matrix(S, "similarity matrix")
    if S.shape[0] != S.shape[1]:
        raise ExplorerError(f"The similarity matrix must be square, got shape {S.shape}.")
    if S.shape[0] < 2:
        raise ExplorerError("Ordinality needs at least 2 prototypes.")
    return S


def normalise_rows(P) -> np.ndarray:
    """Return ``P`` with every row scaled to unit L2 norm (zero rows are an error)."""
    P = _matrix(P)
    norms = np.linalg.norm(P, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ExplorerError("A prototype has zero norm, so its cosine similarity is undefined.")
    return P / norms


def _window(R: int, window) -> tuple[int, int]:
    if window is None:
        return 0, R - 1
    try:
        a, b = (int(v) for v in window)
    except (TypeError, ValueError):
        raise ExplorerError(f"The window must be a pair of rank indices (a, b), got {window!r}.")
    if not 0 <= a < b <= R - 1:
        raise ExplorerError(f"The window ({a}, {b}) must satisfy 0 <= a < b <= {R - 1} for {R} ranks.")
    return a, b


def similarity_matrix(P, window=None) -> np.ndarray:
    """Cosine similarity between prototype rows; ``window=(a, b)`` keeps ranks a..b inclusive."""
    P = _matrix(P)
    a, b = _window(P.shape[0], window)
    Q = normalise_rows(P[a : b + 1])
    return np.clip(Q @ Q.T, -1.0, 1.0)


def similarity_view(S, view: str = "cosine", logit_scale: float = 100.0) -> np.ndarray:
    """Heatmap view of ``S``: "cosine" (as is), "max_normalised" (row / row max) or "softmax" (row softmax of logit_scale * S)."""
    S = _matrix(S, "similarity matrix")
    if view == "cosine":
        return S.copy()
    if view == "max_normalised":
        return S / S.max(axis=1, keepdims=True)
    if view == "softmax":
        Z = logit_scale * S
        Z = np.exp(Z - Z.max(axis=1, keepdims=True))
        return Z / Z.sum(axis=1, keepdims=True)
    raise ExplorerError(f"Unknown similarity view {view!r}; choose one of {', '.join(SIMILARITY_VIEWS)}.")


def _order_matrix(S) -> np.ndarray:
    """m x m boolean C[i, j] = S[i, j] > S[i, j + 1] (only i <= j is meaningful)."""
    S = _square(S)
    m = S.shape[0] - 1
    return S[:m, :m] > S[:m, 1:]


def _diagonal_counts(S) -> tuple[np.ndarray, np.ndarray]:
    """Per offset d = j - i: number of ordered pairs (C true) and number of pairs (m - d)."""
    C = _order_matrix(S)
    m = C.shape[0]
    i, j = np.triu_indices(m)
    good = np.bincount((j - i)[C[i, j]], minlength=m)
    return good, m - np.arange(m)


def ordinality(S, span: int | None = None) -> float:
    """Fraction of pairs i <= j < i + span (j <= m - 1) whose similarity falls from j to j + 1; span None = all pairs."""
    good, total = _diagonal_counts(S)
    m = len(total)
    s = m if span is None else int(span)
    if s < 1:
        raise ExplorerError(f"The ordinality span must be at least 1, got {span}.")
    s = min(s, m)
    return float(good[:s].sum() / total[:s].sum())


def report_spans(m: int) -> list[int]:
    """Spans reported for m = N - 1: 1, 2, 4, ..., 2**floor(log2 m), then m (deduplicated)."""
    if m < 1:
        raise ExplorerError("Ordinality needs at least 2 prototypes.")
    spans = [2**k for k in range(int(np.floor(np.log2(m))) + 1)]
    return spans if spans[-1] == m else spans + [m]


def ordinality_report(P, window=None) -> dict:
    """Ordinality summary of prototypes ``P`` (optionally windowed): per-span values, all-pairs value, violations."""
    P = _matrix(P)
    if P.shape[0] < 2:
        raise ExplorerError("Ordinality needs at least 2 prototypes.")
    a, b = _window(P.shape[0], window)
    S = similarity_matrix(P, (a, b))
    good, total = _diagonal_counts(S)
    m = len(total)
    cg, ct = np.cumsum(good), np.cumsum(total)
    num_pairs, num_good = int(ct[-1]), int(cg[-1])
    return {
        "num_prototypes": m + 1,
        "window": (a, b),
        "spans": {s: float(cg[s - 1] / ct[s - 1]) for s in report_spans(m)},
        "ordinality": num_good / num_pairs,
        "violation_rate": 1.0 - num_good / num_pairs,
        "num_pairs": num_pairs,
        "num_violations": num_pairs - num_good,
    }


def violation_map(S) -> np.ndarray:
    """m x m boolean map, True where i <= j and S[i, j + 1] >= S[i, j] (an ordinality violation)."""
    C = _order_matrix(S)
    return np.triu(~C)


def adjacent_similarity(S) -> np.ndarray:
    """Similarity of each rank to the next one: S[r, r + 1] for r = 0..N-2."""
    S = _square(S)
    return np.diagonal(S, offset=1).copy()


def _pca(X: np.ndarray, dims: int) -> np.ndarray:
    """The first ``dims`` principal components of the rows: what scikit-learn's ``PCA(svd_solver="full")``
    returns, signs included (each component's largest loading positive), by one SVD, so that a page
    opening on the projection does not import scikit-learn (about 1.8 s)."""
    Xc = X - X.mean(axis=0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    Vt = Vt[:dims]
    Vt *= np.sign(Vt[np.arange(dims), np.argmax(np.abs(Vt), axis=1)])[:, None]
    return Xc @ Vt.T


def project(P, method: str = "pca", dims: int = 2, seed: int = 0, **kw) -> np.ndarray:
    """Project L2-normalised prototype rows to ``dims`` (2 or 3) with "pca", "tsne" or "umap"; returns R x dims."""
    if method not in PROJECTIONS:
        raise ExplorerError(f"Unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}.")
    if dims not in (2, 3):
        raise ExplorerError(f"Projections have 2 or 3 dimensions, got {dims}.")
    X = normalise_rows(P)
    R = X.shape[0]
    if R < 3:
        raise ExplorerError(f"A projection needs at least 3 prototypes, got {R}.")
    if method == "pca":
        if dims > min(X.shape):
            raise ExplorerError(f"PCA to {dims} dimensions needs embeddings with at least {dims} dimensions.")
        if kw:
            raise ExplorerError(f"PCA takes no options (got {', '.join(kw)}); they are t-SNE's or UMAP's.")
        Y = _pca(X, dims)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        opts = dict(perplexity=float(min(30, max(2, (R - 1) // 3))), init="pca", random_state=seed)
        opts.update(kw)
        if not opts["perplexity"] < R:
            raise ExplorerError(f"The t-SNE perplexity must be below the number of prototypes ({R}).")
        Y = TSNE(n_components=dims, **opts).fit_transform(X)
    else:
        import umap  # slow import (~15 s), so only here

        opts = dict(n_neighbors=min(15, R - 1), random_state=seed, n_jobs=1)
        if R <= dims + 2:  # spectral initialisation needs more points than dimensions
            opts["init"] = "random"
        opts.update(kw)
        opts["n_neighbors"] = max(2, min(int(opts["n_neighbors"]), R - 1))
        Y = umap.UMAP(n_components=dims, **opts).fit_transform(X)
    return np.asarray(Y, dtype=np.float64)


AXES = ("ends", "principal")  # the rank axis: first -> last prototype, or the prototypes' first principal direction


def rank_axis(P, axis: str = "ends") -> np.ndarray:
    """Unit vector of the rank axis of prototypes ``P`` (rows normalised first): ``ends`` from the first to
    the last prototype, ``principal`` the first principal direction, signed so the last prototype lies further."""
    P = normalise_rows(P)
    if P.shape[0] < 2:
        raise ExplorerError("A rank axis needs at least two prototypes.")
    ends = P[-1] - P[0]
    if axis == "ends":
        direction = ends
    elif axis == "principal":
        direction = np.linalg.svd(P - P.mean(axis=0), full_matrices=False)[2][0]
        direction = direction if direction @ ends >= 0 else -direction
    else:
        raise ExplorerError(f"Unknown rank axis {axis!r}; choose one of {', '.join(AXES)}.")
    norm = float(np.linalg.norm(direction))
    if norm == 0:
        raise ExplorerError("The first and last prototypes are identical; the rank axis is undefined.")
    return direction / norm


def rank_axis_positions(features, P, axis: str = "ends") -> np.ndarray:
    """Position of each (normalised) image feature along the rank axis of ``P``."""
    return normalise_rows(features) @ rank_axis(P, axis)
