"""Plotly figures for the pages (presentation only: the numbers come from ``explorer``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

HEAT_SCALE = "Viridis"
VIEW_TITLES = {"cosine": "cosine similarity", "max_normalised": "row / row max", "softmax": "row softmax (× logit scale)"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")


def _layout(fig: go.Figure, height: int = 420, title: str | None = None) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10), title=title,
                      template="plotly_white")
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
    return _layout(fig, height, title)


def violation_map(violations: np.ndarray, labels: Sequence[str], height: int = 460, unit: str = "") -> go.Figure:
    """m x m map: cell (i, j) red when rank j+1 is at least as similar to rank i as rank j is."""
    labels = list(labels)
    m = violations.shape[0]
    z = np.where(np.triu(np.ones((m, m), dtype=bool)), violations.astype(np.float32), np.float32(np.nan))
    x = [f"{labels[j]}→{labels[j + 1]}" for j in range(m)]
    y = labels[:m]
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=y, colorscale=[[0, "#e8f1fa"], [0.5, "#e8f1fa"], [0.5, "#d62728"], [1, "#d62728"]], zmin=0, zmax=1,
        showscale=False, xgap=0, ygap=0,
        hovertemplate="from rank %{y}: step %{x}<br>violation: %{z:.0f} (1 = similarity did not fall)<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", type="category", title="row rank i")
    fig.update_xaxes(type="category", title="step j → j+1", showticklabels=m <= 40)
    return _layout(fig, height)


def adjacent_curve(values: np.ndarray, labels: Sequence[str], unit: str = "", height: int = 300,
                   series: dict[str, np.ndarray] | None = None) -> go.Figure:
    """Cosine similarity of each rank to the next one."""
    fig = go.Figure()
    series = series or {"adjacent": values}
    for k, (name, vals) in enumerate(series.items()):
        x = [f"{labels[i]}→{labels[i + 1]}" for i in range(len(vals))]
        fig.add_trace(go.Scatter(x=x, y=vals, mode="lines+markers", name=name, marker=dict(size=4),
                                 line=dict(color=PALETTE[k % len(PALETTE)]),
                                 hovertemplate="%{x}: %{y:.4f}<extra>" + name + "</extra>"))
    fig.update_xaxes(type="category", title=f"rank → next rank{f' ({unit})' if unit else ''}", nticks=20)
    fig.update_yaxes(title="cosine(r, r+1)")
    fig.update_layout(showlegend=len(series) > 1)
    return _layout(fig, height)


def projection(layout: np.ndarray, labels: Sequence[str], values: Sequence[float], unit: str = "",
               height: int = 520, title: str | None = None) -> go.Figure:
    """2-D / 3-D scatter of prototypes coloured by rank value, consecutive ranks joined by a line."""
    labels, values = list(labels), np.asarray(values, dtype=float)
    custom = np.stack([np.asarray(labels, dtype=object), values], axis=1)
    hover = "rank %{customdata[0]}<br>value %{customdata[1]:g}" + (f" {unit}" if unit else "") + "<extra></extra>"
    marker = dict(color=values, colorscale="Turbo", size=6, colorbar=dict(title=unit or "value", thickness=12),
                  showscale=True)
    if layout.shape[1] == 3:
        fig = go.Figure([
            go.Scatter3d(x=layout[:, 0], y=layout[:, 1], z=layout[:, 2], mode="lines", line=dict(color="rgba(120,120,120,0.6)", width=3),
                         hoverinfo="skip", showlegend=False),
            go.Scatter3d(x=layout[:, 0], y=layout[:, 1], z=layout[:, 2], mode="markers", marker={**marker, "size": 4},
                         customdata=custom, hovertemplate=hover, showlegend=False),
        ])
        fig.update_layout(scene=dict(xaxis_title="1", yaxis_title="2", zaxis_title="3"))
    else:
        fig = go.Figure([
            go.Scatter(x=layout[:, 0], y=layout[:, 1], mode="lines", line=dict(color="rgba(120,120,120,0.6)", width=1.5),
                       hoverinfo="skip", showlegend=False),
            go.Scatter(x=layout[:, 0], y=layout[:, 1], mode="markers", marker=marker, customdata=custom,
                       hovertemplate=hover, showlegend=False),
        ])
        fig.update_xaxes(title="component 1")
        fig.update_yaxes(title="component 2", scaleanchor="x")
    return _layout(fig, height, title)


def distribution(probs: np.ndarray, labels: Sequence[str], values: Sequence[float], record: dict, unit: str = "",
                 height: int = 340, title: str | None = None) -> go.Figure:
    """Bars of p(rank) with the expected value (line) and the central interval (band)."""
    values = np.asarray(values, dtype=float)
    lo, hi = record["interval_values"]
    fig = go.Figure(go.Bar(x=values, y=probs, marker_color="#4c78a8", customdata=list(labels),
                           hovertemplate="rank %{customdata}: %{y:.3f}<extra></extra>", name="p(rank)"))
    fig.add_vrect(x0=lo - 0.5 * _step(values), x1=hi + 0.5 * _step(values), fillcolor="#f2c14e", opacity=0.18, line_width=0,
                  annotation_text=f"{record['coverage'] * 100:.0f}% interval", annotation_position="top left",
                  annotation=dict(yshift=-18))  # one line below the value's label, so the two never overlap
    value = record.get("value", record["expected_value"])
    fig.add_vline(x=value, line_color="#d62728", line_dash="dash",
                  annotation_text=f"{record.get('estimate', 'expected')} {value:.1f}", annotation_position="top right")
    fig.update_xaxes(title=f"rank value{f' ({unit})' if unit else ''}")
    fig.update_yaxes(title="probability", rangemode="tozero")
    fig.update_layout(showlegend=False, bargap=0.05)
    return _layout(fig, height, title)


def _step(values: np.ndarray) -> float:
    return float(np.median(np.diff(values))) if len(values) > 1 else 1.0


def overlaid_distributions(series: list[tuple[str, np.ndarray, np.ndarray, dict]], unit: str = "", height: int = 380) -> go.Figure:
    """Several checkpoints' distributions for the same image: (name, values, probs, record)."""
    fig = go.Figure()
    for k, (name, values, probs, rec) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        fig.add_trace(go.Scatter(x=values, y=probs, mode="lines", name=name, line=dict(color=colour, width=2, shape="hvh"),
                                 hovertemplate=f"{name}<br>%{{x:g}}: %{{y:.3f}}<extra></extra>"))
        fig.add_vline(x=rec.get("value", rec["expected_value"]), line_color=colour, line_dash="dot")
    fig.update_xaxes(title=f"rank value{f' ({unit})' if unit else ''}")
    fig.update_yaxes(title="probability", rangemode="tozero")
    fig.update_layout(legend=dict(orientation="h", y=1.1))
    return _layout(fig, height)


def per_rank_errors(series: list[tuple[str, Sequence[str], Sequence[float | None]]], unit: str = "", height: int = 340) -> go.Figure:
    """Grouped bars of per-rank MAE: (name, rank labels, values with None for ranks without examples)."""
    fig = go.Figure()
    for k, (name, labels, vals) in enumerate(series):
        fig.add_trace(go.Bar(x=list(labels), y=[np.nan if v is None else v for v in vals], name=name,
                             marker_color=PALETTE[k % len(PALETTE)],
                             hovertemplate=f"{name}<br>rank %{{x}}: MAE %{{y:.3f}}<extra></extra>"))
    fig.update_xaxes(type="category", title=f"true rank{f' ({unit})' if unit else ''}", nticks=25)
    fig.update_yaxes(title="MAE (expected value)")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.12))
    return _layout(fig, height)


def interpolation_weights(panels: list[tuple[str, np.ndarray, np.ndarray]], labels: Sequence[str], height: int = 320) -> go.Figure:
    """One panel per scheme: W[:, k] against the rank, one line per base (dotted marks at base positions)."""
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], shared_yaxes=True,
                        horizontal_spacing=0.04)
    x = np.arange(len(labels))
    for col, (_title, weights, positions) in enumerate(panels, start=1):
        for k in range(weights.shape[1]):
            fig.add_trace(go.Scatter(x=x, y=weights[:, k], mode="lines", line=dict(color=PALETTE[k % len(PALETTE)], width=1.6),
                                     name=f"base {k + 1}", legendgroup=f"b{k}", showlegend=col == 1 and weights.shape[1] <= 8,
                                     customdata=list(labels),
                                     hovertemplate=f"base {k + 1}<br>rank %{{customdata}}: %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
        for pos in positions:
            fig.add_vline(x=float(pos), line_width=1, line_dash="dot", line_color="#999", row=1, col=col)
        fig.update_xaxes(title="rank index", row=1, col=col)
    fig.update_yaxes(title="weight", row=1, col=1, rangemode="tozero")
    _layout(fig, height)
    fig.update_layout(margin=dict(t=40))
    return fig
