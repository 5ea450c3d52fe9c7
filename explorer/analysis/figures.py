"""The plotly figures the app and the HTML report share (one copy of each): the layout, similarity
heatmaps, reliability diagrams, value MAE per slice, the ROC and precision-recall curves of a cut with
its operating points, and the model-by-slice matrix. Presentation only: the numbers come from the rest
of :mod:`explorer.analysis` and :mod:`explorer.metrics`; the app's own figures are in
``app_pages/ui/charts.py``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

HEAT_SCALE = "Viridis"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
LEGEND = dict(orientation="h", yanchor="bottom", y=1.0, x=0, xanchor="left")  # above the plot, clear of the toolbar

def layout(fig: go.Figure, height: int = 420, title: str | None = None, room_above: bool = False) -> go.Figure:
    """The figures' layout (white template, tight margins); ``room_above``: room above the plot for a horizontal :data:`LEGEND`, clear of the toolbar."""
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=48 if room_above else 40 if title else 10, b=10),
                      title=title, template="plotly_white")
    return fig



def heatmap(matrix: np.ndarray, labels: Sequence[str], title: str | None = None, zmin: float | None = None,
            zmax: float | None = None, colorbar_title: str = "", height: int = 460, unit: str = "",
            show_scale: bool = True) -> go.Figure:
    """Square similarity heatmap; row = rank i, column = rank j; rank 0 at the top."""
    labels = list(labels)
    fig = go.Figure(go.Heatmap(
        z=np.asarray(matrix, dtype=np.float32), x=labels, y=labels, colorscale=HEAT_SCALE, zmin=zmin, zmax=zmax, showscale=show_scale,
        colorbar=dict(title=colorbar_title, thickness=12),
        hovertemplate=f"rank %{{y}}{(' ' + unit) if unit else ''} vs %{{x}}: %{{z:.4f}}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", type="category", title=None, scaleanchor="x", constrain="domain")
    fig.update_xaxes(type="category", title=None, constrain="domain")
    return layout(fig, height, title)



def reliability(series: list[tuple[str, dict]], height: int = 420) -> go.Figure:
    """Accuracy vs mean confidence per bin, one line per checkpoint, with the diagonal (perfect calibration)."""
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#888", dash="dash"), name="perfect",
                               hoverinfo="skip"))
    for k, (name, table) in enumerate(series):
        conf, acc, count = (np.asarray(table[c], dtype=float) for c in ("confidence", "accuracy", "count"))
        full = count > 0
        fig.add_trace(go.Scatter(
            x=conf[full], y=acc[full], mode="lines+markers", name=name, line=dict(color=PALETTE[k % len(PALETTE)]),
            marker=dict(size=4 + 10 * np.sqrt(count[full] / max(count.sum(), 1))), customdata=count[full],
            hovertemplate=f"{name}<br>confidence %{{x:.3f}}<br>accuracy %{{y:.3f}}<br>%{{customdata:.0f}} images<extra></extra>"))
    fig.update_xaxes(title="confidence (argmax probability)", range=[-0.03, 1.03], constrain="domain")
    fig.update_yaxes(title="accuracy", range=[-0.03, 1.03], scaleanchor="x", constrain="domain")
    fig.update_layout(legend=LEGEND)
    return layout(fig, height, room_above=True)



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
    return layout(fig, height, room_above=True)


# --- cut-points ------------------------------------------------------------------------------------------

POINT_MARKERS = {"default": ("circle", "P ≥ 0.5"), "target_recall": ("diamond", "target recall")}


def cut_curves(series: list[tuple[str, dict | None, dict[str, dict]]], height: int = 380) -> go.Figure:
    """ROC (left) and precision-recall (right) curves of a cut's score, one colour per checkpoint
    (``series``: (name, :func:`explorer.analysis.cuts.curves`, {operating point: its
    :func:`~explorer.analysis.cuts.curve_point`})), each operating point marked (circle: P >= 0.5,
    diamond: the target-recall threshold). At-or-above is the positive class."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ROC", "Precision-recall"), horizontal_spacing=0.1)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#bbb", dash="dash"), hoverinfo="skip",
                             showlegend=False), row=1, col=1)
    for k, (name, curve, points) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        if curve is None:
            continue
        for col, (x, y) in enumerate((("fpr", "tpr"), ("recall", "precision")), start=1):
            fig.add_trace(go.Scatter(x=curve[x], y=curve[y], mode="lines", name=name, legendgroup=name, showlegend=col == 1,
                                     line=dict(color=colour, width=2, shape="hv" if col == 1 else "vh"),
                                     hovertemplate=f"{name}<br>{x} %{{x:.3f}}, {y} %{{y:.3f}}<extra></extra>"), row=1, col=col)
            for point, (symbol, label) in POINT_MARKERS.items():
                p = points.get(point) or {}
                if p.get(x) is None or p.get(y) is None:
                    continue
                fig.add_trace(go.Scatter(x=[p[x]], y=[p[y]], mode="markers", name=f"{name}: {label}", legendgroup=name,
                                         showlegend=False, marker=dict(color=colour, size=12, symbol=symbol, line=dict(color="black", width=1)),
                                         hovertemplate=f"{name}, {label}<br>{x} %{{x:.3f}}, {y} %{{y:.3f}}<extra></extra>"), row=1, col=col)
    fig.update_xaxes(title="false positive rate (below called at-or-above)", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title="true positive rate", range=[-0.02, 1.02], row=1, col=1)
    fig.update_xaxes(title="recall (at or above)", range=[-0.02, 1.02], row=1, col=2)
    fig.update_yaxes(title="precision", range=[-0.02, 1.02], row=1, col=2)
    layout(fig, height, room_above=True)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, x=0, xanchor="left"), margin=dict(b=80))
    return fig


# --- the model-by-slice matrix ---------------------------------------------------------------------------


def slice_matrix(matrix: dict[str, dict[str, dict[str, Any]]], deviations: dict[str, dict[str, float | None]],
                 columns: Sequence[str], field: str, unit: str = "", height: int | None = None) -> go.Figure:
    """Checkpoints (rows) by the values of ``field`` (``columns``): each cell shows the value MAE, its
    colour the cell less its row's mean (``deviations``; red: worse than the checkpoint's usual, blue:
    better); hover gives the 95 % interval and the images."""
    names, columns = list(matrix), list(columns)
    cells = [[matrix[n].get(c) or {"n": 0} for c in columns] for n in names]
    z = [[np.nan if deviations[n].get(c) is None else deviations[n][c] for c in columns] for n in names]
    text = [[f"{m['mae_value']:.2f}" if m.get("n") else "" for m in row] for row in cells]
    custom = [[[m.get("mae_value", np.nan) if m.get("n") else np.nan, *(m.get("ci95") or [np.nan, np.nan]), m.get("n", 0)]
               for m in row] for row in cells]
    span = float(np.nanmax(np.abs(z))) if np.isfinite(np.asarray(z, dtype=float)).any() else 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=columns, y=names, text=text, texttemplate="%{text}", customdata=custom, colorscale="RdBu_r", zmid=0,
        zmin=-span, zmax=span, xgap=2, ygap=2, colorbar=dict(title="vs row mean", thickness=12),
        hovertemplate=(f"%{{y}}<br>{field} %{{x}}: MAE %{{customdata[0]:.3f}}" + (f" {unit}" if unit else "")
                       + "<br>95 %: %{customdata[1]:.3f}–%{customdata[2]:.3f}<br>%{customdata[3]:.0f} images<extra></extra>")))
    fig.update_yaxes(autorange="reversed", type="category", title=None)
    fig.update_xaxes(type="category", title=field, side="top")
    return layout(fig, height or 120 + 36 * len(names), room_above=True)
