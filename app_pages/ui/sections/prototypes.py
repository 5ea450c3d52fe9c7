"""The Geometry page's own figures of one checkpoint's prototypes: the rank window and heatmap view, the
summary metrics, the similarity heatmap and violation map, ordinality per span, adjacent similarity and
the projections (the sections below them: sections/geometry.py)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages.ui import charts, errors, formatting, pickers, resources
from explorer.analysis import figures


def prototype_figures(entry, ckpt) -> None:
    """The window and view controls, then every figure of the prototypes in that window."""
    ranks = ckpt.classes  # what the prototype rows score (NumCLIP: its concept bins)
    c1, c2 = st.columns([3, 2])
    with c1:
        a, b = pickers.rank_window(entry, "geometry-window")
    with c2:
        view = st.segmented_control("Heatmap view", list(formatting.VIEWS), format_func=formatting.VIEWS.get, default="cosine",
                                    key="geometry-view", bind="query-params") or "cosine"
    geo = resources.geometry(entry, (a, b))
    labels = ranks.labels[a : b + 1]
    _summary_metrics(geo["report"], geo, labels, ranks.unit, b - a + 1)
    _similarity_charts(geo, labels, ranks.unit, view)
    _projection_section(entry, (a, b), labels, ranks.values[a : b + 1], ranks.unit)


def _summary_metrics(report: dict, geo: dict, labels, unit: str, count: int) -> None:
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Ordinality (all pairs)", formatting.fmt_pct(report["ordinality"], 2))
    m2.metric("Violation rate", formatting.fmt_pct(report["violation_rate"], 2),
              help=f"{report['num_violations']} of {report['num_pairs']} pairs")
    m3.metric("Ranks in window", f"{count}", help=f"{labels[0]} to {labels[-1]}{(' ' + unit) if unit else ''}")
    m4.metric("Mean adjacent cosine", f"{geo['adjacent'].mean():.4f}")


def _similarity_charts(geo: dict, labels, unit: str, view: str) -> None:
    """Heatmap and violation map side by side, then ordinality per span and the adjacent-rank curve."""
    report = geo["report"]
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Similarity heatmap** · {formatting.VIEW_TITLES[view]}")
        with errors.guard("the heatmap"):
            fig = figures.heatmap(geo["views"][view], labels, colorbar_title=formatting.VIEWS[view], unit=unit)
            charts.chart(fig, "geometry-heatmap", f"similarity-{view}")
    with right:
        st.markdown("**Ordering violations** · red: walking right from rank i, similarity did not fall")
        with errors.guard("the violation map"):
            charts.chart(charts.violation_map(geo["violations"], labels, unit=unit), "geometry-violations", "ordering-violations")

    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Ordinality per span** (pairs i ≤ j < i + s)")
        spans = pd.DataFrame({"span s": list(report["spans"].keys()),
                              "ordinality %": [100 * v for v in report["spans"].values()]})
        st.dataframe(spans, hide_index=True, width="stretch",
                     column_config={"ordinality %": st.column_config.ProgressColumn(format="%.2f", min_value=0, max_value=100)})
    with right:
        st.markdown("**Adjacent-rank similarity** cos(P_r, P_r+1)")
        charts.chart(charts.adjacent_curve(geo["adjacent"], labels, unit=unit), "geometry-adjacent", "adjacent-similarity")


def _projection_section(entry, window: tuple[int, int], labels, values, unit: str) -> None:
    st.subheader("Projections")
    p1, p2, p3 = st.columns([3, 1, 1])
    method = p1.segmented_control("Method", list(formatting.PROJECTIONS), format_func=formatting.PROJECTIONS.get, default="pca",
                                  key="geometry-method", bind="query-params") or "pca"
    dims = p2.segmented_control("Dimensions", [2, 3], format_func=lambda d: f"{d}-D", default=2, key="geometry-dims", bind="query-params") or 2
    seed = int(p3.number_input("Seed", min_value=0, max_value=10_000, value=0, step=1, key="geometry-seed", bind="query-params",
                               disabled=method == "pca"))
    with errors.guard("the projection"):
        if resources.projection_is_ready(entry, window, method, dims, seed):
            layout = resources.projection(entry, window, method, dims, seed)
        else:
            note = " (the first UMAP in a fresh server also compiles numba code)" if method == "umap" else ""
            with st.spinner(f"Computing the {formatting.PROJECTIONS[method]} layout{note}…"):
                layout = resources.projection(entry, window, method, dims, seed)
        charts.chart(charts.projection(layout, labels, values, unit=unit), "geometry-projection", f"projection-{method}-{dims}d")
        st.caption("Coloured by rank value; consecutive ranks are joined. UMAP and t-SNE layouts are kept on disk per "
                   "checkpoint content, window, dimensions and seed.")
