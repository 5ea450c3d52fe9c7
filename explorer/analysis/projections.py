"""Projections of prototype or image matrices (PCA, UMAP, t-SNE) with UMAP / t-SNE layouts kept on
disk by content, so a second visit draws instantly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from explorer.analysis.geometry import PROJECTIONS, project
from explorer.core.errors import ExplorerError
from explorer.core.fsio import atomic_path, safe_filename
from explorer.core.settings import cache_folder


def projection_path(key: str, method: str, dims: int, seed: int, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/projections/<key>-<method>-<dims>-<seed>.npy``."""
    folder = Path(cache_dir) if cache_dir is not None else cache_folder()
    return folder / "projections" / f"{safe_filename(key)}-{method}-{int(dims)}-{int(seed)}.npy"


def cached_projection(matrix, key: str, method: str = "pca", dims: int = 2, seed: int = 0,
                      cache_dir: str | Path | None = None, persist: bool | None = None) -> tuple[np.ndarray, bool]:
    """Project ``matrix`` (see :func:`explorer.analysis.geometry.project`) and return ``(layout, from_disk)``.

    UMAP and t-SNE layouts are read from / written to :func:`projection_path` (``persist`` None:
    everything but PCA, which is instant). ``key`` must identify the matrix (content hash, plus
    the rank window when one is used). A corrupt cache file is recomputed and replaced.
    """
    if method not in PROJECTIONS:
        raise ExplorerError(f"Unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}.")
    P = np.asarray(matrix.detach().cpu().numpy() if hasattr(matrix, "detach") else matrix, dtype=np.float64)
    persist = method != "pca" if persist is None else persist
    path = projection_path(key, method, dims, seed, cache_dir)
    if persist and path.is_file():
        try:
            layout = np.load(path, allow_pickle=False)
            if layout.shape == (P.shape[0], int(dims)) and np.all(np.isfinite(layout)):
                return layout, True
        except (OSError, ValueError):
            pass
    layout = project(P, method, int(dims), int(seed))
    if persist:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, layout, allow_pickle=False)
        except OSError:
            pass  # a read-only cache only costs the recomputation next time
    return layout, False
