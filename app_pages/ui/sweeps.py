"""Sweeps in the app: the Train page's sweep form and live panel (states of the runs, results table as
they finish), and Compare's sweep results (the mean ± std table, the few-shot and label-shift curves).

Everything shown is read from the sweep folder's files, so a sweep started from the CLI, on any
executor (a Slurm job array too), shows the same way when its folder is opened.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages.ui import charts
from app_pages.ui.formatting import METRIC_TITLES
from explorer.analysis import curves
from explorer.core import settings
from explorer.core.errors import ExplorerError
from explorer.core.fsio import safe_filename
from explorer.training import sweep_files
from explorer.training.config import TrainConfig, parse_method_list, sweep_grid
from explorer.training.executors import cores, executor_spec
from explorer.training.sweep_jobs import SweepManager
from explorer.training.sweeps import markdown_table, summarize_runs

SWEEP_KEY = "sweep"
STATE_ICONS = {"done": "✅", "running": "⏳", "failed": "❌", "waiting": "·"}


def sweeps_folder() -> Path:
    """Where the app's sweeps go: ``<library>/sweeps/<name>/`` (the Library lists only its top level)."""
    return settings.library_folder() / "sweeps"


@st.cache_resource
def sweep_manager() -> SweepManager:
    """One manager per server: a sweep goes on when its page is left or reloaded."""
    return SweepManager()


def _numbers(text: str, parse=int) -> list:
    return [parse(v) for v in text.replace(" ", "").split(",") if v]


def _grid(values: dict):
    """The sweep's runs from the form's fields (the CLI's syntax: comma lists, C:S label shifts)."""
    name = safe_filename(values["name"].strip(), sep="-", default="sweep")
    folder = sweeps_folder() / name
    try:
        shots = [None if v == "all" else int(v) for v in values["shots"].replace(" ", "").split(",") if v]
        shifts = [None if v == "none" else [float(x) for x in v.split(":")] for v in values["shifts"].replace(" ", "").split(",") if v]
        seeds = _numbers(values["seeds"])
    except ValueError:
        raise ExplorerError("Shots, seeds and label shifts are comma lists of numbers (shots may be 'all', shifts C:S or none).") from None
    if any(s is not None and len(s) != 2 for s in shifts):
        raise ExplorerError("A label shift is C:S (e.g. 10:0.5) or none.")
    base = TrainConfig(dataset=values["dataset"].strip(), out=str(folder / "run.safetensors"), backbone=values["backbone"].strip(),
                       epochs=int(values["epochs"]), device=settings.app_device())
    return sweep_grid(base, parse_method_list(values["methods"]), shots, seeds, folder, shifts or None), folder


def sweep_form() -> None:
    """The grid as fields; the sweep runs on local worker processes (inline on Windows)."""
    st.subheader("New sweep")
    st.caption("Every method × shots × label shift × seed, each run in its own folder; the results table fills in as runs finish. "
               "The CLI's `sweep` command with `--executor slurm` runs the same grid as a Slurm job array.")
    with st.form("sweep-form"):
        c1, c2, c3 = st.columns(3)
        values = {
            "dataset": c1.text_input("Dataset", "dots:20", key="sweep-dataset"),
            "backbone": c2.text_input("Backbone", "demo", key="sweep-backbone"),
            "name": c3.text_input("Name", "my-sweep", key="sweep-name", help="the folder under the library's sweeps/"),
            "methods": c1.text_input("Methods", "zeroshot,coop,ordinalclip:linear", key="sweep-methods",
                                     help="comma list of method[:interpolation], as `sweep --methods`"),
            "shots": c2.text_input("Shots per label", "1,4,16", key="sweep-shots", help="comma list; 'all' for the full train split"),
            "seeds": c3.text_input("Seeds", "0,1,2", key="sweep-seeds"),
            "shifts": c1.text_input("Label shifts", "none", key="sweep-shifts", help="comma list of C:S pairs or none, e.g. none,10:0.5"),
            "epochs": c2.number_input("Epochs", 1, 500, 20, key="sweep-epochs"),
            "workers": c3.number_input("Workers", 1, max(1, cores()), max(1, cores()), key="sweep-workers",
                                       help="worker processes on this machine, each with its share of the cores"),
        }
        submitted = st.form_submit_button("Start sweep", type="primary")
    if submitted:
        runs, folder = _grid(values)
        executor = "local" if os.name == "posix" else "inline"  # submitit's local processes need POSIX signals
        sweep_manager().start(runs, folder, executor_spec(executor, int(values["workers"]) if executor == "local" else None))
        st.query_params[SWEEP_KEY] = folder.name
        st.rerun()


def states_table(statuses: list[sweep_files.RunStatus]) -> pd.DataFrame:
    """One row per run: its id, state and detail (or error)."""
    return pd.DataFrame([{"run": s.run.id, "state": f"{STATE_ICONS[s.state]} {s.state}", "detail": s.error or s.detail}
                         for s in statuses])


def results_markdown(statuses: list[sweep_files.RunStatus]) -> str | None:
    """The mean ± std table of the runs finished so far (None before the first)."""
    rows = sweep_files.table_rows(statuses)
    return markdown_table(summarize_runs(rows)[1]) if rows else None


def _show_sweep(statuses: list[sweep_files.RunStatus], key: str) -> None:
    counts = sweep_files.count_states(statuses)
    finished = counts["done"] + counts["failed"]
    st.progress(finished / max(len(statuses), 1), text=", ".join(f"{n} {s}" for s, n in counts.items()))
    table = results_markdown(statuses)
    if table:
        st.markdown(table)
    with st.expander(f"Runs ({len(statuses)})", expanded=counts["running"] + counts["waiting"] > 0):
        st.dataframe(states_table(statuses), hide_index=True, width="stretch", key=f"{key}-states")


@st.fragment(run_every=1.0)
def sweep_panel(name: str) -> None:
    """A sweep of the app's sweeps folder, live: its runs' states and the results table so far."""
    folder = sweeps_folder() / name
    job = sweep_manager().get(folder)
    try:
        statuses = sweep_files.sweep_status(folder)
    except ExplorerError as exc:  # no sweep.json yet: the sweep is starting, or it could not start
        if job and job.error:
            st.error(job.error)
        else:
            st.warning("Starting the sweep…" if job and job.active else str(exc))
        return
    st.subheader(f"Sweep {name}" + (f" · {job.state}" if job else ""))
    _show_sweep(statuses, "sweep-panel")
    if job and job.active and st.button("Cancel sweep", key="sweep-cancel"):
        job.cancel()
    elif job and job.error:
        st.error(job.error)
    elif not job or not job.active:
        st.caption(f"Files in {folder}; its curves are on the Compare page (sweep folder `{name}`).")


def _open_runs(choice: str, typed: str, upload):
    """(runs table, statuses or None) of what was chosen: an uploaded runs.csv, a sweep folder (its
    run files), or a folder or file holding runs.csv."""
    if upload is not None:
        return curves.parse_runs(upload, upload.name), None
    path = Path(typed.strip()).expanduser() if typed.strip() else (sweeps_folder() / choice if choice else None)
    if path is None:
        return None, None
    if (path / sweep_files.PLAN).is_file():
        statuses = sweep_files.sweep_status(path)
        return pd.DataFrame(sweep_files.table_rows(statuses)), statuses
    return curves.read_runs(path), None


def sweep_results_section() -> None:
    """Compare: a sweep's results (the mean ± std table, the few-shot and label-shift curves) from its folder."""
    st.subheader("Sweep results: few-shot and label-shift curves")
    listed = sorted(p.parent.name for p in sweeps_folder().glob(f"*/{sweep_files.PLAN}"))
    c1, c2, c3 = st.columns([2, 3, 2])
    choice = c1.selectbox("App sweep", [""] + listed, key="sweep-choice", format_func=lambda v: v or "—", bind="query-params",
                          help="the sweeps started on the Train page")
    typed = c2.text_input("Sweep folder", "", key="curves-folder", placeholder="the --out-dir of 'ordinal-explorer sweep'",
                          help="A sweep folder (sweep.json and runs/, also while it runs, e.g. under Slurm), or one holding runs.csv.")
    upload = c3.file_uploader("…or upload runs.csv", type=["csv"], key="curves-upload")
    runs, statuses = _open_runs(choice, typed, upload)
    if runs is None:
        st.caption("Pick a sweep (or point to its folder, or upload its runs.csv) for its table and its curves against shots.")
        return
    if statuses is not None:
        _show_sweep(statuses, "compare-sweep")
    elif len(runs):
        st.markdown(markdown_table(summarize_runs(runs.to_dict("records"))[1]))
    done = runs[runs["status"] == "done"] if "status" in runs else runs
    if not len(done):
        st.info("No run of this sweep has finished yet.")
        return
    _curve_charts(curves.build_curves(runs))


def _curve_charts(table: pd.DataFrame) -> None:
    """MAE and accuracy against shots, one line per method, for the regime chosen."""
    regimes = list(dict.fromkeys(table["regime"]))
    regime = st.segmented_control("Regime", regimes, default=regimes[0], key="curves-regime") if len(regimes) > 1 else regimes[0]
    regime = regime or regimes[0]
    for col, metric in zip(st.columns(2), ("mae_exp", "acc_max")):
        with col:
            st.markdown(f"**{METRIC_TITLES[metric]}** · {regime}")
            part = table[(table["metric"] == metric) & (table["regime"] == regime)].drop(columns=["shots_order"])
            charts.figure(charts.curves(curves.curve_series(table, metric, regime), METRIC_TITLES[metric]), part, f"curves-{metric}",
                   f"curves-{metric}-{regime.replace(' ', '_')}")
    st.caption(f"Mean ± std over seeds ({int(table['seeds'].min())}–{int(table['seeds'].max())} per point).")
