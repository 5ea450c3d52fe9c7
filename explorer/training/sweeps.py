"""Sweeps: :func:`sweep` runs every run of a grid on an executor (:mod:`explorer.training.executors`:
inline, local worker processes or a Slurm job array) and makes its results from the runs' files
(:mod:`explorer.training.sweep_files`): per-run rows -> ``runs.csv``; mean ± std over seeds ->
``results.csv`` / ``results.md``; the few-shot / label-shift curves -> ``curves.csv``
(:mod:`explorer.analysis.curves`). The same command run again does only the runs not done yet.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from explorer.core.errors import ExplorerError
from explorer.core.fsio import remove_temporaries, write_text
from explorer.training import executors
from explorer.training import sweep_files as files
from explorer.training.config import Progress, SweepRun
from explorer.training.executors import ExecutorSpec

SUMMARY_METRICS = ("mae_exp", "mae_max", "acc_max", "cs1", "qwk", "spearman", "ordinality")
LOG_FOLDER = ".submitit"  # submitit's logs and pickled calls, inside the sweep folder


def _frame(rows: list[dict[str, Any]]):
    import pandas as pd

    raw = pd.DataFrame(rows)
    for column, default in (("label_shift", "none"), ("status", "done"), ("error", "")):
        raw[column] = raw[column].fillna(default) if column in raw else default
    return raw


def summarize_runs(rows: list[dict[str, Any]]):
    """(runs frame, summary rows): mean and std over the done seeds per (method, shots, label shift),
    with the count and first error of the runs that failed."""
    from explorer.metrics.ordinal import aggregate

    raw = _frame(rows)
    summary = []
    for (label, shots, shift), group in raw.groupby(["method", "shots", "label_shift"], sort=False):
        done, failed = group[group["status"] == "done"], group[group["status"] == "failed"]
        agg = aggregate(done[[m for m in SUMMARY_METRICS if m in done]].to_dict("records")) if len(done) else {}
        summary.append({"method": label, "shots": shots, "label_shift": shift, "seeds": len(done), "failed": len(failed),
                        "error": str(failed["error"].iloc[0]) if len(failed) else "",
                        **{f"{m}_mean": agg.get(m, {}).get("mean", math.nan) for m in SUMMARY_METRICS},
                        **{f"{m}_std": agg.get(m, {}).get("std", math.nan) for m in SUMMARY_METRICS}})
    return raw, summary


def _cells(r: dict[str, Any]) -> list[str]:
    """The metric cells of one results row (mean ± std), or the failure when no seed finished."""
    if not r["seeds"]:
        return [f"failed: {r['error']}"] + ["—"] * 4
    pct = lambda m: f"{r[m + '_mean'] * 100:.1f} ± {r[m + '_std'] * 100:.1f}"  # noqa: E731
    num = lambda m: f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}"  # noqa: E731
    return [num("mae_exp"), pct("acc_max"), pct("cs1"), num("qwk"), pct("ordinality")]


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """The results table as Markdown (mean ± std over seeds; a label-shift column when there is a shift)."""
    shifted = any(r.get("label_shift", "none") != "none" for r in summary)
    head = ["method", "shots"] + (["label shift"] if shifted else []) + ["seeds", "test MAE (exp)", "test acc %", "1-off %",
                                                                          "QWK", "ordinality %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary:
        seeds = f"{r['seeds']} ({r['failed']} failed)" if r.get("failed") and r["seeds"] else str(r["seeds"])
        cells = [str(r["method"]), str(r["shots"])] + ([str(r["label_shift"])] if shifted else []) + [seeds] + _cells(r)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_sweep_tables(rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """Write runs.csv, results.csv, results.md and curves.csv (atomically) into ``out_dir``."""
    import pandas as pd

    from explorer.analysis.curves import write_curves

    out_dir.mkdir(parents=True, exist_ok=True)
    raw, summary = summarize_runs(rows)
    write_text(out_dir / "runs.csv", raw.to_csv(index=False))
    table = pd.DataFrame(summary)
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    write_text(csv_path, table.to_csv(index=False))
    markdown = markdown_table(summary)
    write_text(md_path, markdown + "\n")
    done = raw[raw["status"] == "done"]
    curves_path = write_curves(done, out_dir) if len(done) else None
    return {"csv": csv_path, "md": md_path, "markdown": markdown, "table": table, "curves": curves_path}


def start_sweep(folder: Path, runs: list[SweepRun]) -> list[SweepRun]:
    """Write the plan and return the runs still to do (not done); refuses while runs of it are running."""
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        raise ExplorerError(f"The grid names a run twice ({next(i for i in ids if ids.count(i) > 1)}); give each value once.")
    statuses = files.sweep_status(folder, runs)
    live = [s for s in statuses if s.state == "running"]
    if live:
        raise ExplorerError(f"{len(live)} runs of this sweep are running now ({live[0].run.id}: {live[0].detail}); "
                            "wait for them (--status shows them) or stop them, then run the command again.")
    files.write_plan(folder, runs)
    for r in runs:  # nothing of this sweep runs: a temporary in a run folder is a killed writer's
        remove_temporaries(files.run_folder(folder, r), (".*.tmp",))
    return [s.run for s in statuses if s.state != "done"]


class _Ticker:
    """While workers run: a progress event when the count of finished runs changes, a line per finished run."""

    def __init__(self, folder: Path, runs: list[SweepRun], progress: Callable[[Progress], None] | None):
        self.folder, self.runs, self.progress = folder, runs, progress
        self.finished: set[str] = set()

    def __call__(self) -> bool:
        """Report what finished since the last call; True when every run has."""
        todo = [r for r in self.runs if r.id not in self.finished]
        new = [s for s in files.sweep_status(self.folder, todo) if s.state in ("done", "failed")]
        for s in new:
            self.finished.add(s.run.id)
            what = f"test MAE {s.row.get('mae_exp', math.nan):.3f}" if s.state == "done" else s.error
            if self.progress:
                self.progress(Progress("sweep", message=f"{s.state}: {s.run.id} ({what})"))
        if new and self.progress:
            self.progress(Progress("sweep", len(self.finished), len(self.runs), message="runs finished"))
        return len(self.finished) == len(self.runs)


def dispatch(folder: Path, pending: list[SweepRun], spec: ExecutorSpec, progress: Callable[[Progress], None] | None = None,
             should_stop: Callable[[], bool] | None = None, wait: bool = True) -> list:
    """Run the pending runs on the executor; returns the submitted jobs (none inline). ``wait``: until
    they have all ended."""
    from explorer.training.sweep_worker import run_worker

    ids, where = [r.id for r in pending], str(folder.resolve())
    if spec.executor == "inline":
        run_worker(where, ids, None, progress, should_stop)
        return []
    jobs = executors.submit(spec, folder.resolve() / LOG_FOLDER, run_worker, where, ids)
    if progress:
        job = f" as Slurm job {str(jobs[0].job_id).split('_')[0]}" if spec.executor == "slurm" else f" to {len(jobs)} local workers"
        progress(Progress("sweep", message=f"{len(ids)} runs submitted{job}"))
    if wait:
        executors.wait(jobs, _Ticker(folder, pending, progress), should_stop)
    return jobs


def sweep_results(folder: Path, runs: list[SweepRun] | None = None) -> dict[str, Any]:
    """The results tables of a sweep folder made from its runs' files (written when any run finished),
    with every run's status and the counts."""
    statuses = files.sweep_status(folder, runs)
    rows = files.table_rows(statuses)
    tables = write_sweep_tables(rows, folder) if rows else {"csv": None, "md": None, "markdown": "", "table": None, "curves": None}
    return {**tables, "statuses": statuses, "counts": files.count_states(statuses)}


def sweep(runs: list[SweepRun], out_dir: Path, progress: Callable[[Progress], None] | None = None,
          executor: ExecutorSpec | None = None, should_stop: Callable[[], bool] | None = None, wait: bool = True) -> dict[str, Any]:
    """Train every run of a sweep grid not done yet on ``executor`` (default inline) and write the
    results tables (mean ± std over seeds) from the runs' files; ``wait=False``: submit and return."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    pending = start_sweep(folder, runs)
    spec = executor or ExecutorSpec()
    if pending:
        dispatch(folder, pending, spec, progress, should_stop, wait)
    if not wait and pending and spec.executor != "inline":
        return {"submitted": len(pending), "statuses": files.sweep_status(folder, runs), "markdown": ""}
    return sweep_results(folder, runs)
