"""Compare: the model-by-slice matrix (rows: 2 to 12 checkpoints of the library, columns: the values of
a field, cells: value MAE with its 95 % interval on hover, colour relative to the row's mean) and the
HTML report of those checkpoints to download. The numbers come from
:mod:`explorer.analysis.comparison` (each checkpoint evaluated as ``eval --by F`` evaluates it), the
report from :mod:`explorer.analysis.report` (the file ``ordinal-explorer report`` writes)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages.ui import charts, pickers, resources
from app_pages.ui.sections import slice_tables
from explorer.analysis import comparison, cuts, figures
from explorer.analysis.report import build_report
from explorer.core.errors import ExplorerError
from explorer.core.fsio import safe_filename
from explorer.store import library as lib

REPORT = "matrix-report"  # session key: (what the report was built from, its HTML bytes)


def matrix_section(entries: list[lib.LibraryEntry], chosen: list[lib.LibraryEntry]) -> None:
    """The matrix of the checkpoints picked here (the compare set by default) on a dataset split, and the report."""
    names = pickers.url_names(entries)
    by_name = {names[e.key]: e for e in entries if e.key in names}
    picked = st.multiselect(f"Checkpoints (rows, 2 to {comparison.MAX_ROWS})", list(by_name),
                            default=[names[e.key] for e in chosen if e.key in names], max_selections=comparison.MAX_ROWS,
                            key="matrix-checkpoints", bind="query-params", help="Any checkpoints of the library, not only the 2 to 4 above.")
    spec, split = pickers.dataset_split("matrix", pickers.trained_on([by_name[n] for n in picked]))
    if len(picked) < 2 or not spec:
        st.caption("Pick 2 to 12 checkpoints and give a dataset spec to see their value MAE per slice, side by side.")
        return
    ready = _predictions({n: by_name[n] for n in picked}, spec, split)
    if not ready:
        return
    field = slice_tables.field_picker(next(iter(ready.values()))[1], "matrix-by", "Columns: values of")
    result = resources.comparison({n: by_name[n] for n in ready}, spec, split, field)
    matrix = result["matrix"]
    columns = comparison.matrix_columns(matrix)
    unit = next(iter(ready.values()))[0].ranks.unit
    table = pd.DataFrame([{"checkpoint": n, **{c: row.get(c, {}).get("mae_value") for c in columns}} for n, row in matrix.items()])
    charts.figure(figures.slice_matrix(matrix, comparison.row_deviations(matrix), columns, field, unit), table, "matrix-figure",
                  f"mae-by-{field}-matrix")
    st.caption("Each cell: the value MAE of a checkpoint on a slice (hover: 95 % bootstrap interval and images), exactly "
               "`ordinal-explorer compare --by` and each checkpoint's `eval --by`; colour: the cell less the row's mean "
               "(red: worse than that checkpoint's usual, blue: better).")
    _report({n: by_name[n] for n in ready}, ready, spec, split, field)


def _predictions(picked: dict[str, lib.LibraryEntry], spec: str, split: str) -> dict[str, tuple]:
    """(checkpoint, split predictions) of each picked checkpoint, with a progress bar; a checkpoint that cannot
    be evaluated on the dataset is left out with its sentence."""
    bar = st.progress(0.0, text=f"Evaluating {len(picked)} checkpoints on {spec} [{split}]…")
    ready = {}
    for i, (name, e) in enumerate(picked.items()):
        bar.progress(i / len(picked), text=f"Evaluating {name} on {spec} [{split}] ({i + 1} of {len(picked)})…")
        try:
            ready[name] = (resources.load_checkpoint(e), resources.split_predictions(e, spec, split))
        except ExplorerError as exc:
            st.warning(str(exc) if name in str(exc) else f"{name}: {exc}")
    bar.empty()
    return ready


def _report(entries: dict[str, lib.LibraryEntry], ready: dict[str, tuple], spec: str, split: str, field: str) -> None:
    """Build the HTML report of the matrix's checkpoints (with optional cut-points) and offer it as a download."""
    st.markdown("**Report** · one self-contained HTML file (opens offline), as `ordinal-explorer report` writes it")
    c1, c2, c3 = st.columns([3, 2, 2])
    text = c1.text_input("Cut-points in the report", "", key="report-cuts", bind="query-params", placeholder="e.g. 18, 65 (optional)")
    recall = c2.slider("Target recall", 0.05, 1.0, cuts.DEFAULT_TARGET_RECALL, step=0.01, key="report-recall", bind="query-params")
    try:
        cut_list = tuple(float(t) for t in text.replace(";", ",").split(",") if t.strip())
    except ValueError:
        st.warning(f"The cut-points must be numbers separated by commas (got {text!r}).")
        return
    wanted = (tuple((n, e.content_hash) for n, e in entries.items()), spec, split, field, cut_list, float(recall))
    c3.write("")
    if c3.button("Build the report", key="report-build", icon=":material/description:"):
        _build(ready, spec, field, cut_list, float(recall), wanted)
    built = st.session_state.get(REPORT)
    if built and built[0] == wanted:
        st.download_button("Download the report (HTML)", built[1], file_name=safe_filename(f"report-{spec}-{split}.html"),
                           mime="text/html", key="report-download", on_click="ignore", icon=":material/download:")


def _build(ready: dict[str, tuple], spec: str, field: str, cut_list: tuple, recall: float, wanted: tuple) -> None:
    bar = st.progress(0.0, text="Evaluating…")
    try:
        result = comparison.compare_predictions(ready, spec, field, cut_list, recall)
        result["predictions"] = ready
        html = build_report(result, progress=lambda done, total, message: bar.progress(done / total, text=f"{message} ({done} of {total})"))
    except ExplorerError as exc:
        bar.empty()
        st.warning(str(exc))
        return
    bar.empty()
    st.session_state[REPORT] = (wanted, html.encode("utf-8"))
