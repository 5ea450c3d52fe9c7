"""Few-shot and label-shift curves from a sweep's ``runs.csv``: a metric against shots, mean and
standard deviation over seeds, one line per method and regime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from explorer.core.errors import ExplorerError

CURVE_METRICS = ("mae_exp", "acc_max")


def _shots_order(value) -> float:
    """Numeric sort key of a shots value ("all" = the full train split, after every number)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def read_runs(path: str | Path):
    """The runs table of a sweep: ``runs.csv`` itself or the sweep folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "runs.csv"
    if not path.is_file():
        raise ExplorerError(f"No sweep results at {path}; run 'ordinal-explorer sweep' first (it writes runs.csv).")
    return parse_runs(path, path.name)


def parse_runs(source, name: str):
    """A sweep runs table from a CSV path or file object; one sentence when it is not one."""
    import pandas as pd

    try:
        runs = pd.read_csv(source)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ExplorerError(f"{name} is not a readable CSV file ({' '.join(str(exc).split())[:120]}).") from exc
    runs = runs.rename(columns={"learner": "method"})  # the column's name in sweeps of earlier versions
    missing = {"method", "shots", "seed"} - set(runs.columns)
    if missing:
        raise ExplorerError(f"{name} is not a sweep runs table (missing columns {', '.join(sorted(missing))}).")
    return runs


def build_curves(runs, metrics: tuple[str, ...] = CURVE_METRICS):
    """Long table: one row per (regime, method, shots, metric) with mean, std (ddof=1, 0 for one seed), seeds.

    ``runs`` is a DataFrame (or list of row dicts) with method, shots, seed and the metrics; a
    ``label_shift`` column (e.g. "none", "10 0.5") separates the few-shot and label-shift regimes.
    """
    import pandas as pd

    runs = pd.DataFrame(runs).copy()
    if "status" in runs:  # a sweep's failed runs have no metrics
        runs = runs[runs["status"].fillna("done") == "done"].copy()
    if runs.empty:
        raise ExplorerError("The sweep has no runs to draw curves from.")
    regime = runs["label_shift"].fillna("none").astype(str) if "label_shift" in runs else pd.Series("none", index=runs.index)
    runs["regime"] = ["few-shot" if r in ("none", "", "nan") else f"label shift {r}" for r in regime]
    runs["shots"] = runs["shots"].astype(str)
    missing = [m for m in metrics if m not in runs]
    if missing:
        raise ExplorerError(f"The runs table has no {', '.join(missing)} column.")
    rows = []
    for (reg, method, shots), group in runs.groupby(["regime", "method", "shots"], sort=False):
        for m in metrics:
            v = group[m].astype(float).to_numpy()
            rows.append({"regime": reg, "method": method, "shots": shots, "shots_order": _shots_order(shots),
                         "metric": m, "mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if v.size > 1 else 0.0,
                         "seeds": int(v.size)})
    table = pd.DataFrame(rows)
    order = {name: i for i, name in enumerate(dict.fromkeys(runs["method"]))}  # the sweep's method order
    table["_method"] = table["method"].map(order)
    table = table.sort_values(["regime", "metric", "_method", "shots_order"], kind="stable")
    return table.drop(columns=["_method"]).reset_index(drop=True)


def write_curves(runs, out_dir: str | Path) -> Path:
    """Write ``curves.csv`` (atomically) beside the sweep's other tables; returns its path."""
    from explorer.core.fsio import write_text

    path = Path(out_dir) / "curves.csv"
    write_text(path, build_curves(runs).drop(columns=["shots_order"]).to_csv(index=False))
    return path


def curve_series(curves, metric: str, regime: str) -> list[dict[str, Any]]:
    """One series per method for a plot: ``{"method", "shots", "mean", "std", "seeds"}``."""
    part = curves[(curves["metric"] == metric) & (curves["regime"] == regime)]
    return [{"method": method, "shots": list(g["shots"]), "mean": g["mean"].tolist(), "std": g["std"].tolist(),
             "seeds": g["seeds"].tolist()} for method, g in part.groupby("method", sort=False)]
