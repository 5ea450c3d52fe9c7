"""Plotly figures of "Where it fails": value MAE per slice with its 95 % interval, side by side for
several checkpoints, and the images' positions on the rank axis against their labels."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from app_pages.ui.charts import PALETTE
from app_pages.ui.charts import _layout as _base_layout

LEGEND = dict(orientation="h", yanchor="bottom", y=1.0, x=0, xanchor="left")


def slice_errors(series: list[tuple[str, dict[str, dict]]], field: str, unit: str = "", height: int = 340) -> go.Figure:
    """Value MAE per slice of ``field`` with the bootstrap 95 % interval as error bars, one bar group per
    checkpoint (``series``: (name, {slice: metrics})); empty slices are left out."""
    fig = go.Figure()
    for k, (name, slices) in enumerate(series):
        full = [(value, m) for value, m in slices.items() if m["n"]]
        mae = np.array([m["mae_value"] for _, m in full])
        lo = np.array([m["ci95"][0] for _, m in full])
        hi = np.array([m["ci95"][1] for _, m in full])
        fig.add_trace(go.Bar(
            x=[value for value, _ in full], y=mae, name=name, marker_color=PALETTE[k % len(PALETTE)],
            error_y=dict(type="data", symmetric=False, array=hi - mae, arrayminus=mae - lo, visible=True),
            customdata=np.stack([lo, hi, [m["n"] for _, m in full]], axis=1) if full else None,
            hovertemplate=f"{name}<br>{field} %{{x}}: MAE %{{y:.3f}}<br>95 %: %{{customdata[0]:.3f}}–%{{customdata[1]:.3f}}"
                          "<br>%{customdata[2]:.0f} images<extra></extra>"))
    fig.update_xaxes(type="category", title=field)
    fig.update_yaxes(title=f"MAE ({unit})" if unit else "MAE", rangemode="tozero")
    fig.update_layout(barmode="group", legend=LEGEND, showlegend=len(series) > 1)
    _base_layout(fig, height)
    fig.update_layout(margin=dict(t=48))
    return fig


def rank_axis(values: Sequence[float], positions: Sequence[float], rho: float, unit: str = "", height: int = 340) -> go.Figure:
    """Each image's position on the rank axis against its label's value, with Spearman's rho in the title."""
    fig = go.Figure(go.Scatter(x=list(values), y=list(positions), mode="markers", marker=dict(size=6, opacity=0.6, color=PALETTE[0]),
                               hovertemplate="label %{x}<br>position %{y:.4f}<extra></extra>"))
    fig.update_xaxes(title=f"true label ({unit})" if unit else "true label")
    fig.update_yaxes(title="position on the rank axis (cosine units)")
    return _base_layout(fig, height, title=f"Spearman ρ = {rho:.3f}")
