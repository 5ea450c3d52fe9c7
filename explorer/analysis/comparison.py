"""Many checkpoints on one dataset: each evaluated exactly as ``eval`` does, and the model-by-slice
matrix (rows: checkpoints, columns: the values of one field, cells: the value MAE with its 95 %
interval), the cells being the very ``eval --by F`` slices."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from explorer.analysis.cuts import DEFAULT_TARGET_RECALL
from explorer.analysis.evaluation import check_decisions, evaluate_predictions, predict_split
from explorer.analysis.slices import BAND, slice_order
from explorer.core.errors import ExplorerError

MATRIX_KEYS = ("n", "mae_value", "ci95")
MAX_ROWS = 12  # checkpoints in one matrix (the app's limit; the command line takes any number)


def row_names(ckpts: Sequence) -> list[str]:
    """One name per checkpoint: its own, or with its file name where two share one."""
    names = [c.name for c in ckpts]
    return [f"{n} ({c.path.name})" if names.count(n) > 1 and c.path else n for n, c in zip(names, ckpts)]


def slice_matrix(evaluations: dict[str, dict[str, Any]], field: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``{checkpoint: {slice value: {n, mae_value, ci95}}}`` from evaluations made with ``by=[field]``."""
    return {name: {value: {k: m[k] for k in MATRIX_KEYS if k in m} for value, m in result["slices"][field].items()}
            for name, result in evaluations.items()}


def matrix_columns(matrix: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Every slice value of the matrix's rows, in the slices' order (bands numerically, ``missing`` last)."""
    return sorted({value for row in matrix.values() for value in row}, key=slice_order)


def row_deviations(matrix: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Each cell's value MAE less its row's mean (the unweighted mean of the row's non-empty cells): how
    much worse (positive) or better than usual a checkpoint does on that slice; None for an empty cell."""
    out = {}
    for name, row in matrix.items():
        full = [m["mae_value"] for m in row.values() if m.get("n")]
        mean = float(np.mean(full)) if full else 0.0
        out[name] = {value: (m["mae_value"] - mean if m.get("n") else None) for value, m in row.items()}
    return out


def compare_predictions(named: dict[str, tuple[Any, Any]], dataset: str, by: str = BAND, cuts: Sequence[float] = (),
                        target_recall: float = DEFAULT_TARGET_RECALL) -> dict[str, Any]:
    """The comparison of ``{name: (checkpoint, its SplitPredictions on the dataset)}``: each evaluated as
    ``eval --by by --cut ...`` evaluates it (:func:`explorer.analysis.evaluation.evaluate_predictions`),
    the model-by-slice matrix of ``by`` and, with cuts, each checkpoint's decisions."""
    if not named:
        raise ExplorerError("Give at least one checkpoint to compare.")
    evaluations = {name: evaluate_predictions(ckpt, sp, by=[by], cuts=list(cuts) or None, target_recall=target_recall)
                   for name, (ckpt, sp) in named.items()}
    out: dict[str, Any] = {"by": by, "dataset": dataset, "matrix": slice_matrix(evaluations, by), "evaluations": evaluations}
    if cuts:
        out["cuts"] = {name: result["cuts"] for name, result in evaluations.items()}
    return out


def compare_checkpoints(models: Sequence[tuple[Any, Any]], dataset: str, by: str = BAND, cuts: Sequence[float] = (),
                        progress: Callable[[int, int, str], None] | None = None, target_recall: float = DEFAULT_TARGET_RECALL,
                        keep_predictions: bool = False, **split_options: Any) -> dict[str, Any]:
    """Evaluate each (checkpoint, backbone) on ``dataset`` with ``by`` and ``cuts`` (``split_options``: split,
    skip_bad, faces, cache_dir, as eval takes them) and gather the model-by-slice matrix of ``by``;
    ``keep_predictions`` keeps each checkpoint's (checkpoint, SplitPredictions) under ``predictions``."""
    if not models:
        raise ExplorerError("Give at least one checkpoint to compare.")
    for ckpt, _ in models:
        check_decisions(ckpt, cuts, target_recall)  # one sentence before any image is embedded
    names = row_names([c for c, _ in models])
    named = {}
    for i, (name, (ckpt, backbone)) in enumerate(zip(names, models)):
        if progress:
            progress(i, len(models), name)
        named[name] = (ckpt, predict_split(ckpt, backbone, dataset, **split_options))
    if progress:
        progress(len(models), len(models), "")
    out = compare_predictions(named, dataset, by, cuts, target_recall)
    if keep_predictions:
        out["predictions"] = named
    return out
