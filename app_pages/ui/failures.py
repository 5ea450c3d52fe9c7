"""Where it fails: value MAE per slice (with 95 % intervals) and by true-label band, the worst images,
the rank axis (Geometry, one checkpoint; Compare, side by side) and the gallery of a region selected
in the joint map. The numbers come from :mod:`explorer.analysis.slices`."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages.ui import failure_charts as fc
from app_pages.ui import resources
from app_pages.ui import sections as analysis
from app_pages.ui.gallery import gallery
from explorer.analysis import geometry, slices
from explorer.core.errors import ExplorerError
from explorer.metrics.ordinal import spearman


def _report(ckpt, sp, fields: list[str]) -> dict:
    return slices.slice_report(sp.outputs(), sp.samples, ckpt.ranks, fields, known=sp.source.samples)


def _slice_table(report: dict, field: str, name: str | None = None) -> pd.DataFrame:
    rows = []
    for value, m in report["slices"][field].items():
        ci = m.get("ci95") or [None, None]
        rows.append({**({"checkpoint": name} if name else {}), field: value, "n": m["n"], "MAE": m.get("mae_value"),
                     "MAE 95 % low": ci[0], "MAE 95 % high": ci[1], "accuracy": m.get("acc_max")})
    return pd.DataFrame(rows)


def _show_table(table: pd.DataFrame) -> None:
    st.dataframe(table, hide_index=True, width="stretch", height=min(300, 38 + 35 * len(table)),
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("MAE", "MAE 95 % low", "MAE 95 % high", "accuracy")})


def _gap_caption(report: dict, field: str) -> str:
    gap = report["gaps"][field]
    return f"Largest gap: {gap['gap']:.3f} ({gap['worst']} vs {gap['best']})." if gap else "Fewer than two non-empty slices."


def _fields_picker(sp, key: str) -> list[str]:
    fields = slices.field_names(sp.samples)
    return st.multiselect("Slice by", fields, default=[slices.BAND], key=key,
                          help="CSV columns, UTKFace gender/race, Adience gender; band: the true label in bands") or [slices.BAND]


def failure_section(entry, ckpt) -> None:
    """Geometry: value MAE per slice and by band with intervals, the rank axis and the worst images."""
    st.subheader("Where it fails")
    spec, split = analysis._dataset_inputs("fails", analysis.trained_on([entry]))
    if not spec:
        st.caption("Give a dataset spec to see the errors per slice and the worst images.")
        return
    try:
        with st.spinner(f"Evaluating on {spec} [{split}]…"):
            sp = analysis.split_predictions(entry, spec, split)
        fields = _fields_picker(sp, "fails-by")
        report = _report(ckpt, sp, fields)
    except ExplorerError as exc:
        st.warning(str(exc))
        return
    for field, col in zip(fields, st.columns(min(len(fields), 2)) * len(fields)):
        with col:
            st.markdown(f"**Value MAE by {field}** · 95 % bootstrap intervals")
            table = _slice_table(report, field)
            analysis.figure(fc.slice_errors([(entry.name, report["slices"][field])], field, ckpt.ranks.unit),
                            table, f"fails-{field}", f"{entry.name}-mae-by-{field}")
            _show_table(table)
            st.caption(_gap_caption(report, field))
    _rank_axis_view(entry, ckpt, sp)
    _worst_gallery(entry, ckpt, sp)


def _rank_axis_view(entry, ckpt, sp) -> None:
    axis = st.segmented_control("Rank axis", list(geometry.AXES), default="ends", key="fails-axis",
                                format_func={"ends": "first → last prototype", "principal": "principal direction"}.get) or "ends"
    positions = geometry.rank_axis_positions(sp.features, sp.prototypes, axis)
    truth = ckpt.ranks.value_array[sp.labels]
    rho = spearman(truth, positions)
    data = pd.DataFrame({"path": [s.path for s in sp.samples], "label": truth, "position": positions})
    analysis.figure(fc.rank_axis(truth, positions, rho, ckpt.ranks.unit), data, "fails-axis-map", f"{entry.name}-rank-axis")
    st.caption("How much of the ordering lives on one direction of the embedding: each image's position on the axis "
               "from the first to the last prototype (or the prototypes' principal direction) against its label.")


def _worst_gallery(entry, ckpt, sp) -> None:
    count = int(st.slider("Worst images", 4, 48, 12, step=4, key="fails-worst"))
    rows = slices.error_rows(sp.outputs(), sp.samples, ckpt.ranks, ckpt.classes, sp.found)
    st.markdown(f"**The {min(count, len(rows))} largest errors** of {len(rows)}")
    order = slices.worst_first(sp.outputs(), ckpt.ranks)[:count]
    gallery(ckpt, sp, order, "fails-gallery")
    analysis.csv_button(pd.DataFrame(rows), "fails-errors", f"{entry.name}-errors", "Every image's error (CSV)")


def compare_failures(chosen: list) -> None:
    """Compare: value MAE per slice and band of the chosen checkpoints side by side."""
    st.subheader("Where they fail")
    spec, split = analysis._dataset_inputs("compare-fails", analysis.trained_on(chosen))
    if not spec:
        st.caption("Give a dataset spec to compare the checkpoints' errors per slice.")
        return
    reports, fields = [], None
    for e in chosen:
        try:
            with st.spinner(f"Evaluating {e.name} on {spec} [{split}]…"):
                sp = analysis.split_predictions(e, spec, split)
                fields = fields or _fields_picker(sp, "compare-fails-by")
                reports.append((e.name, _report(resources.load_checkpoint(e), sp, fields)))
        except ExplorerError as exc:
            st.warning(str(exc) if e.name in str(exc) else f"{e.name}: {exc}")
    if not reports:
        return
    unit = resources.load_checkpoint(chosen[0]).ranks.unit
    for field in fields:
        st.markdown(f"**Value MAE by {field}** · 95 % bootstrap intervals")
        data = pd.concat([_slice_table(r, field, name) for name, r in reports])
        analysis.figure(fc.slice_errors([(name, r["slices"][field]) for name, r in reports], field, unit), data,
                        f"compare-fails-{field}", f"mae-by-{field}")
        _show_table(data)
        st.caption(" ".join(f"{name}: {_gap_caption(r, field)}" for name, r in reports))
