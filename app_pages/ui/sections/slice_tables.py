"""What both "Where it fails" sections (Geometry, Compare) show per slice: the report, its table, the
largest gap, and the picker of the fields to slice by. The numbers come from :mod:`explorer.analysis.slices`."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.analysis import slices


def slice_report(ckpt, sp, fields: list[str]) -> dict:
    """The slice report of a split's predictions (explorer.analysis.slices.slice_report) by ``fields``."""
    return slices.slice_report(sp.outputs(), sp.samples, ckpt.ranks, fields, known=sp.source.samples)


def slice_table(report: dict, field: str, name: str | None = None) -> pd.DataFrame:
    """One row per slice of ``field``: images, value MAE with its 95 % interval, accuracy (and ``name``'s column)."""
    return pd.DataFrame(slices.slice_rows(report["slices"][field], field, name))


def show_slice_table(table: pd.DataFrame) -> None:
    """A slice table, numbers to three decimals."""
    st.dataframe(table, hide_index=True, width="stretch", height=min(300, 38 + 35 * len(table)),
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("MAE", "MAE 95 % low", "MAE 95 % high", "accuracy")})


def gap_caption(report: dict, field: str) -> str:
    """The largest MAE gap between the slices of ``field``, as a sentence."""
    gap = report["gaps"][field]
    return f"Largest gap: {gap['gap']:.3f} ({gap['worst']} vs {gap['best']})." if gap else "Fewer than two non-empty slices."


def fields_picker(sp, key: str) -> list[str]:
    """Which fields of the split's samples to slice by (the true-label band by default)."""
    fields = slices.field_names(sp.samples)
    return st.multiselect("Slice by", fields, default=[slices.BAND], key=key, bind="query-params",
                          help="CSV columns, UTKFace gender/race, Adience gender; band: the true label in bands") or [slices.BAND]


def field_picker(sp, key: str, label: str = "Slice by") -> str:
    """One field of the split's samples to slice by (the true-label band by default), bound to the URL."""
    fields = slices.field_names(sp.samples)
    return st.selectbox(label, fields, index=fields.index(slices.BAND), key=key, bind="query-params",
                        help="CSV columns, UTKFace gender/race, Adience gender; band: the true label in bands")
