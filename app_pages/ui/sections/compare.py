"""The Compare page's sections below its own tables: reliability diagrams on a dataset split, few-shot
and label-shift curves of a sweep folder, and where the checkpoints fail, side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app_pages.ui import charts, pickers, resources
from app_pages.ui.sections import slice_tables
from explorer.analysis import figures
from explorer.core.errors import ExplorerError
from explorer.metrics import calibration
from explorer.store import library as lib

# --- reliability diagrams ----------------------------------------------------------------------------


def calibration_section(chosen: list[lib.LibraryEntry]) -> None:
    """Reliability diagram (confidence vs accuracy per bin) of the chosen checkpoints on one dataset split."""
    spec, split = pickers.dataset_split("calibration", pickers.trained_on(chosen))
    bins = int(st.slider("Bins", 5, 30, calibration.DEFAULT_BINS, key="calibration-bins", bind="query-params"))
    if not spec:
        st.caption("Give a dataset spec to evaluate the checkpoints on.")
        return
    series, rows, tables = [], [], []
    for e in chosen:
        try:
            with st.spinner(f"Evaluating {e.name} on {spec} [{split}]…"):
                sp = resources.split_predictions(e, spec, split)
        except ExplorerError as exc:
            st.warning(str(exc) if e.name in str(exc) else f"{e.name}: {exc}")
            continue
        if sp.note:
            st.caption(f"{e.name}: {sp.note}")
        table = calibration.reliability_table(sp.targets, sp.probs, n_bins=bins)
        series.append((e.name, table))
        tables.append(pd.DataFrame(table).assign(checkpoint=e.name))
        rows.append({"checkpoint": e.name, "n": len(sp.targets), "ECE": calibration.ece(sp.targets, sp.probs, n_bins=bins),
                     "MCE": calibration.mce(sp.targets, sp.probs, n_bins=bins),
                     "90 % coverage": calibration.interval_coverage(sp.targets, sp.probs),
                     "accuracy": float(np.mean(sp.argmax == sp.targets))})
    if not series:
        return
    left, right = st.columns([3, 2])
    with left:
        data = pd.concat(tables)[["checkpoint", "bin_lower", "bin_upper", "count", "confidence", "accuracy", "gap"]]
        charts.figure(figures.reliability(series), data, "calibration-reliability", "reliability-diagram")
    with right:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("ECE", "MCE", "90 % coverage", "accuracy")})
        st.caption(f"Argmax confidence in {bins} equal-width bins (Guo et al. 2017); marker size ∝ images per bin. "
                   "Coverage: share of labels inside the predicted 90 % central interval (ideal 0.90).")


# --- where they fail ----------------------------------------------------------------------------------------


def compare_failures(chosen: list) -> None:
    """Compare: value MAE per slice and band of the chosen checkpoints side by side."""
    spec, split = pickers.dataset_split("compare-fails", pickers.trained_on(chosen))
    if not spec:
        st.caption("Give a dataset spec to compare the checkpoints' errors per slice.")
        return
    reports, fields = [], None
    for e in chosen:
        try:
            with st.spinner(f"Evaluating {e.name} on {spec} [{split}]…"):
                sp = resources.split_predictions(e, spec, split)
                fields = fields or slice_tables.fields_picker(sp, "compare-fails-by")
                reports.append((e.name, slice_tables.slice_report(resources.load_checkpoint(e), sp, fields)))
        except ExplorerError as exc:
            st.warning(str(exc) if e.name in str(exc) else f"{e.name}: {exc}")
    if not reports:
        return
    unit = resources.load_checkpoint(chosen[0]).ranks.unit
    for field in fields:
        st.markdown(f"**Value MAE by {field}** · 95 % bootstrap intervals")
        data = pd.concat([slice_tables.slice_table(r, field, name) for name, r in reports])
        charts.figure(figures.slice_errors([(name, r["slices"][field]) for name, r in reports], field, unit), data,
                      f"compare-fails-{field}", f"mae-by-{field}")
        slice_tables.show_slice_table(data)
        st.caption(" ".join(f"{name}: {slice_tables.gap_caption(r, field)}" for name, r in reports))
