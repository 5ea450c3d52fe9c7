"""Many checkpoints on one dataset: each evaluated exactly as ``eval`` does, and the model-by-slice
matrix (rows: checkpoints, columns: the values of one field, cells: the value MAE with its 95 %
interval), the cells being the very ``eval --by F`` slices."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from explorer.analysis.evaluation import evaluate_checkpoint
from explorer.analysis.slices import BAND
from explorer.core.errors import ExplorerError

MATRIX_KEYS = ("n", "mae_value", "ci95")


def row_names(ckpts: Sequence) -> list[str]:
    """One name per checkpoint: its own, or with its file name where two share one."""
    names = [c.name for c in ckpts]
    return [f"{n} ({c.path.name})" if names.count(n) > 1 and c.path else n for n, c in zip(names, ckpts)]


def slice_matrix(evaluations: dict[str, dict[str, Any]], field: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``{checkpoint: {slice value: {n, mae_value, ci95}}}`` from evaluations made with ``by=[field]``."""
    return {name: {value: {k: m[k] for k in MATRIX_KEYS if k in m} for value, m in result["slices"][field].items()}
            for name, result in evaluations.items()}


def compare_checkpoints(models: Sequence[tuple[Any, Any]], dataset: str, by: str = BAND, cuts: Sequence[float] = (),
                        progress: Callable[[int, int, str], None] | None = None, **eval_options: Any) -> dict[str, Any]:
    """Evaluate each (checkpoint, backbone) on ``dataset`` with ``by`` and ``cuts`` (``eval_options``: split,
    skip_bad, faces, target_recall, cache_dir) and gather the model-by-slice matrix of ``by``."""
    if not models:
        raise ExplorerError("Give at least one checkpoint to compare.")
    names = row_names([c for c, _ in models])
    evaluations = {}
    for i, (name, (ckpt, backbone)) in enumerate(zip(names, models)):
        if progress:
            progress(i, len(models), name)
        evaluations[name] = evaluate_checkpoint(ckpt, backbone, dataset, by=[by], cuts=list(cuts) or None, **eval_options)
    if progress:
        progress(len(models), len(models), "")
    out: dict[str, Any] = {"by": by, "dataset": dataset, "matrix": slice_matrix(evaluations, by), "evaluations": evaluations}
    if cuts:
        out["cuts"] = {name: result["cuts"] for name, result in evaluations.items()}
    return out
