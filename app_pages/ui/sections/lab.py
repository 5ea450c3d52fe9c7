"""The interpolation lab below its checkpoint picker: the scheme, bandwidth, number of base ranks and
window controls, the interpolation weights, the heatmaps, the summary table and the adjacent-rank curves
of the stored prototypes and each re-interpolated variant."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app_pages.ui import charts, formatting, pickers, resources
from explorer.analysis import figures, lab
from explorer.methods.hooks import LabVariant
from explorer.store import library as lib


@st.cache_data(show_spinner=False, max_entries=128)
def _variant(content_hash: str, backbone_id: str, scheme: str, bandwidth: float, num_base_ranks: int,
             _model, _handle) -> LabVariant:
    with _handle.use():  # the text encoder is the pooled backbone's
        return lab.recompute(_model, scheme, bandwidth, num_base_ranks)


def lab_body(entry: lib.LibraryEntry) -> None:
    """The lab of the chosen checkpoint: its controls, then the stored prototypes beside each variant."""
    ckpt = resources.load_checkpoint(entry)
    options = lab.lab_options(ckpt.method, ckpt.method_config)
    ranks = ckpt.ranks
    settings = _settings(entry, options, len(ranks))
    if settings is None:
        return
    schemes, bandwidth, num_base, (a, b) = settings
    model, handle = resources.prompt_model(entry)
    with st.spinner("Recomputing prototypes…"):
        variants = [_variant(entry.content_hash, ckpt.backbone_id, scheme, float(bandwidth) if scheme == "normal" else 1.0,
                             num_base, model, handle) for scheme in schemes]
    st.subheader("Interpolation weights W[r, k]")
    charts.chart(charts.interpolation_weights([(v.label, v.weights, v.positions) for v in variants], ranks.labels), "lab-weights")
    stored = resources.geometry(entry, (a, b))
    window = resources.norm_window((a, b), len(ranks))
    summaries = [(v, lib.geometry_summary(v.prototypes, window, ckpt.meta["logit_scale"])) for v in variants]
    panels = [(f"stored (trained: {options.scheme}, B={options.num_base_ranks})", stored)] + [(v.label, g) for v, g in summaries]
    labels = ranks.labels[a : b + 1]
    _heatmaps(panels, labels, ranks.unit)
    _table(panels, summaries, ckpt.prototypes.matrix.numpy().astype(np.float64))
    charts.chart(charts.adjacent_curve(stored["adjacent"], labels, unit=ranks.unit,
                                       series={title: g["adjacent"] for title, g in panels}), "lab-adjacent")


def _settings(entry, options, num_ranks: int):
    """(schemes, bandwidth, B', rank window) from the controls; None (with a note) without a scheme."""
    c1, c2, c3 = st.columns([2, 1, 1])
    schemes = c1.multiselect("Schemes", list(options.schemes), default=list(options.schemes), key="lab-schemes")
    bandwidth = c2.number_input("Normal bandwidth", min_value=0.05, max_value=float(max(num_ranks, 2)),
                                value=float(options.bandwidth), step=0.5, format="%.2f", key=f"lab-bw-{entry.content_hash}",
                                help="exp(−(d / bandwidth)²); the reference OrdinalCLIP uses 1.")
    num_base = int(c3.number_input("Base ranks B′", min_value=1, max_value=num_ranks, value=int(options.num_base_ranks),
                                   step=1, key=f"lab-b-{entry.content_hash}",
                                   help=f"The checkpoint learned B = {options.num_base_ranks}."))
    window = pickers.rank_window(entry, "lab-window", label="Rank window (heatmaps and ordinality)")
    if not schemes:
        st.info("Pick at least one scheme.")
        return None
    return schemes, bandwidth, num_base, window


def _heatmaps(panels, labels, unit: str) -> None:
    """One similarity heatmap per variant on one colour scale, with its ordinality."""
    zmin = min(float(np.min(g["similarity"])) for _, g in panels)
    zmax = max(float(np.max(g["similarity"])) for _, g in panels)
    st.subheader("Similarity and ordinality per scheme")
    st.caption("Cosine similarity on one colour scale.")
    per_row = 2 if len(panels) == 4 else min(len(panels), 3)
    for start in range(0, len(panels), per_row):
        cols = st.columns(per_row)
        for col, (title, g) in zip(cols, panels[start : start + per_row]):
            with col:
                rep = g["report"]
                st.markdown(f"**{title}**")
                charts.chart(figures.heatmap(g["similarity"], labels, zmin=zmin, zmax=zmax, height=340, unit=unit,
                                            show_scale=col is cols[-1]), f"lab-heat-{start}-{title}", f"lab-heatmap-{title}")
                st.caption(f"ordinality {formatting.fmt_pct(rep['ordinality'], 2)} · violations {formatting.fmt_pct(rep['violation_rate'], 2)}")


def _table(panels, summaries, stored_protos: np.ndarray) -> None:
    """Ordinality per span and closeness to the stored prototypes, one row per variant."""
    rows = []
    for title, g in panels:
        rep = g["report"]
        row = {"prototypes": title, "ordinality %": 100 * rep["ordinality"], "violations %": 100 * rep["violation_rate"],
               "mean adjacent cosine": float(np.mean(g["adjacent"]))}
        row.update({f"span {s} %": 100 * v for s, v in rep["spans"].items()})
        rows.append(row)
    for row, (v, _g) in zip(rows[1:], summaries):
        row["min cosine to stored"] = float(np.min(np.sum(v.prototypes * stored_protos, axis=1)))
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.2f") for c in rows[0] if c.endswith("%")})
