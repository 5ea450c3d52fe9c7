"""Decide at a cut-point, on Geometry (one checkpoint) and on Compare (the checkpoints side by side): a
cut T on the labels' scale and a target recall; the ROC and precision-recall curves of the score
P(y >= T) with both operating points marked, the two error rates with their intervals, the rates per
slice of a field, and the images nearest each threshold on either side. Every number comes from
:mod:`explorer.analysis.cuts` (through :func:`app_pages.ui.resources.decision`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app_pages.ui import charts, gallery, pickers, resources
from app_pages.ui.sections import slice_tables
from explorer.analysis import cuts, figures
from explorer.core.errors import ExplorerError
from explorer.store import library as lib

POINTS = {"target_recall": "the target-recall threshold", "default": "P ≥ 0.5"}
RATE_HELP = ("A score at or above the threshold is called at-or-above. Below called above: below-T images called "
             "at-or-above (for ages at 18: minors called adults); above called below: the reverse. 95 % intervals: "
             "seeded percentile bootstrap over the images of that side.")


def geometry_decide(entry: lib.LibraryEntry) -> None:
    """Geometry: one checkpoint's decisions at a cut-point on a dataset split."""
    spec, split = pickers.dataset_split("decide", pickers.trained_on([entry]))
    if not spec:
        st.caption("Give a dataset spec to turn the distribution into a decision at a cut-point (is the label at least T?).")
        return
    _decide([entry], spec, split, "decide")


def compare_decide(chosen: list[lib.LibraryEntry]) -> None:
    """Compare: the chosen checkpoints' decisions at one cut-point, side by side."""
    spec, split = pickers.dataset_split("compare-decide", pickers.trained_on(chosen))
    if not spec:
        st.caption("Give a dataset spec to compare the checkpoints' decisions at a cut-point (is the label at least T?).")
        return
    _decide(chosen, spec, split, "compare-decide")


def _warn(exc: Exception, name: str, several: bool) -> None:
    st.warning(f"{name}: {exc}" if several and name not in str(exc) else str(exc))


def _decide(entries: list[lib.LibraryEntry], spec: str, split: str, prefix: str) -> None:
    several = len(entries) > 1
    ready = []
    for e in entries:
        try:
            with st.spinner(f"Evaluating {e.name} on {spec} [{split}]…"):
                ready.append((e, resources.load_checkpoint(e), resources.split_predictions(e, spec, split)))
        except ExplorerError as exc:
            _warn(exc, e.name, several)
    if not ready:
        return
    cut, recall, field = _controls(prefix, [ckpt.ranks for _, ckpt, _ in ready], ready[0][2])
    decisions = {}
    for e, ckpt, sp in ready:
        try:
            decisions[e.name] = (ckpt, sp, resources.decision(e, spec, split, cut, recall, field))
        except ExplorerError as exc:
            _warn(exc, e.name, several)
    if not decisions:
        return
    for name, (_, _, d) in decisions.items():
        if d["report"].get("note"):
            st.info(f"{name}: {d['report']['note']}" if several else d["report"]["note"])
    _rates(decisions, prefix, cut, ready[0][1].ranks.unit)
    _slice_rates(decisions, field, prefix)
    _nearest(decisions, prefix, cut)


def _controls(prefix: str, ranks: list, sp) -> tuple[float, float, str]:
    """The cut (a slider over the ranks' values, ends included: those are refused in one sentence), the
    target recall and the field to slice by; all bound to the URL."""
    values = np.unique(np.concatenate([r.value_array for r in ranks]).astype(np.float64))
    lo, hi = float(values[0]), float(values[-1])
    step = float(np.min(np.diff(values))) if values.size > 1 else 1.0
    unit = ranks[0].unit
    c1, c2, c3 = st.columns([3, 2, 2])
    cut = c1.slider(f"Cut-point T{f' ({unit})' if unit else ''}", lo, hi, float(values[values.size // 2]), step=step, format="%g",
                    key=f"{prefix}-cut", bind="query-params",
                    help="Decide whether the label is at least T; the score of an image is P(y ≥ T) (docs/cli.md#cut-points).")
    recall = c2.slider("Target recall (below T called below)", 0.05, 1.0, cuts.DEFAULT_TARGET_RECALL, step=0.01,
                       key=f"{prefix}-recall", bind="query-params",
                       help="The second operating point: the smallest threshold that calls at least this share of the "
                            "below-T images below (0.95: 95 % of minors protected at an age cut of 18).")
    with c3:
        field = slice_tables.field_picker(sp, f"{prefix}-by", "Rates per slice of")
    return float(cut), float(recall), field


def _rates(decisions: dict, prefix: str, cut: float, unit: str) -> None:
    """The ROC and precision-recall curves with both operating points, and the table of the rates."""
    series = [(name if d["report"]["auc"] is None else f"{name} (AUC {d['report']['auc']:.3f})", d["curves"], d["points"])
              for name, (_, _, d) in decisions.items()]
    table = pd.DataFrame(cuts.operating_rows({name: d["report"] for name, (_, _, d) in decisions.items()}))
    st.markdown(f"**At {cut:g}{f' {unit}' if unit else ''}** · circles: P ≥ 0.5, diamonds: the target-recall threshold "
                "(at-or-above is the positive class)")
    charts.figure(figures.cut_curves(series), table, f"{prefix}-curves", f"cut-{cut:g}-curves")
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns
                                if c not in ("checkpoint", "operating point", "below", "at or above")})
    st.caption(RATE_HELP)


def _slice_rates(decisions: dict, field: str, prefix: str) -> None:
    st.markdown(f"**Rates per {field}** at both operating points")
    table = pd.DataFrame(cuts.slice_rate_rows({name: d["report"] for name, (_, _, d) in decisions.items()}, field))
    st.dataframe(table, hide_index=True, width="stretch", height=min(420, 38 + 35 * len(table)),
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns if "called" in c})
    charts.csv_button(table, f"{prefix}-slices", f"cut-rates-by-{field}")


def _nearest(decisions: dict, prefix: str, cut: float) -> None:
    """The images nearest the chosen operating point's threshold, called below and called at-or-above."""
    point = st.segmented_control("Images nearest", list(POINTS), format_func=POINTS.get, default="target_recall",
                                 key=f"{prefix}-point", bind="query-params") or "target_recall"
    places = st.tabs(list(decisions)) if len(decisions) > 1 else [st.container()]
    for k, (place, (name, (ckpt, sp, d))) in enumerate(zip(places, decisions.items())):
        with place:
            threshold = d["report"][point]["threshold"]
            if threshold is None:
                st.caption(f"{name}: no threshold here ({d['report'].get('note', '')})")
                continue
            notes = {int(i): f"P(≥{cut:g}) {d['scores'][i]:.3f}" for side in d["nearest"][point].values() for i in side}
            for side, title in (("below", "Called below, just under"), ("at_or_above", "Called at or above, just over")):
                shown = d["nearest"][point][side]
                st.markdown(f"**{title} the threshold {threshold:.4f}** · {name}")
                if shown:
                    gallery.gallery(ckpt, sp, shown, f"{prefix}-{k}-{side}", notes)
                else:
                    st.caption(f"No image scores {'below' if side == 'below' else 'at or above'} the threshold.")
