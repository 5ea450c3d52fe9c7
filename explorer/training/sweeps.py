"""Sweeps: :func:`sweep` trains every run of a grid; its results: per-run rows -> ``runs.csv``, and
mean ± std over seeds -> ``results.csv`` / ``results.md`` (and the few-shot / label-shift curves ->
``curves.csv``, see :mod:`explorer.analysis.curves`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from explorer.core.fsio import write_text
from explorer.training.config import Progress, SweepRun

SUMMARY_METRICS = ("mae_exp", "mae_max", "acc_max", "cs1", "qwk", "spearman", "ordinality")


def summarize_runs(rows: list[dict[str, Any]]):
    """(runs frame, summary rows): mean and std over seeds per (learner, shots)."""
    import pandas as pd

    from explorer.metrics.ordinal import aggregate

    raw = pd.DataFrame(rows)
    summary = []
    for (label, shots), group in raw.groupby(["learner", "shots"], sort=False):
        agg = aggregate(group[list(SUMMARY_METRICS)].to_dict("records"))
        summary.append({"learner": label, "shots": shots, "seeds": len(group),
                        **{f"{m}_mean": agg[m]["mean"] for m in SUMMARY_METRICS},
                        **{f"{m}_std": agg[m]["std"] for m in SUMMARY_METRICS}})
    return raw, summary


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """The results table as Markdown (mean ± std over seeds)."""
    lines = ["| learner | shots | seeds | test MAE (exp) | test acc % | 1-off % | QWK | ordinality % |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(
            f"| {r['learner']} | {r['shots']} | {r['seeds']} | {r['mae_exp_mean']:.3f} ± {r['mae_exp_std']:.3f} | "
            f"{r['acc_max_mean'] * 100:.1f} ± {r['acc_max_std'] * 100:.1f} | {r['cs1_mean'] * 100:.1f} ± {r['cs1_std'] * 100:.1f} | "
            f"{r['qwk_mean']:.3f} ± {r['qwk_std']:.3f} | {r['ordinality_mean'] * 100:.1f} ± {r['ordinality_std'] * 100:.1f} |"
        )
    return "\n".join(lines)


def write_sweep_tables(rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """Write runs.csv, results.csv, results.md and curves.csv (atomically) into ``out_dir``."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    raw, summary = summarize_runs(rows)
    write_text(out_dir / "runs.csv", raw.to_csv(index=False))
    table = pd.DataFrame(summary)
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    write_text(csv_path, table.to_csv(index=False))
    markdown = markdown_table(summary)
    write_text(md_path, markdown + "\n")
    from explorer.analysis.curves import write_curves

    curves_path = write_curves(raw, out_dir)
    return {"csv": csv_path, "md": md_path, "markdown": markdown, "table": table, "curves": curves_path}


def sweep(runs: list[SweepRun], out_dir: Path, progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Train every run of a sweep grid; write results.csv / results.md with mean +- std over seeds."""
    from explorer.analysis.geometry import ordinality_report
    from explorer.store.checkpoints import load_checkpoint
    from explorer.training.trainer import train

    rows = []
    for run in runs:
        if progress:
            progress(Progress("load", message=f"== {run.label}, shots {run.shots or 'all'}, seed {run.seed}"))
        result = train(run.config, progress=progress)
        test = result.test_metrics or {}
        protos = load_checkpoint(result.checkpoint).prototypes.matrix.numpy()
        shift = run.config.label_shift
        rows.append({"learner": run.label, "shots": run.shots or "all", "seed": run.seed,
                     "label_shift": " ".join(f"{v:g}" for v in shift) if shift else "none",
                     **{k: v for k, v in test.items() if k != "per_rank_mae"},
                     "ordinality": ordinality_report(protos)["ordinality"], "seconds": result.seconds})
    return write_sweep_tables(rows, Path(out_dir))
