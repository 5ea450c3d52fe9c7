"""Plotly figures of the analysis sections (reliability, curves, joint map, confusion, per-rank errors)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from app_pages.ui.charts import PALETTE
from app_pages.ui.charts import _layout as _base_layout

LEGEND = dict(orientation="h", yanchor="bottom", y=1.0, x=0, xanchor="left")


def _layout(fig: go.Figure, height: int) -> go.Figure:
    """The pages' layout with room above the plot for a horizontal legend (clear of the toolbar)."""
    _base_layout(fig, height)
    fig.update_layout(margin=dict(t=48))
    return fig


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
    return _layout(fig, height)


def curves(series: list[dict], metric_title: str, height: int = 360) -> go.Figure:
    """Metric vs shots (category axis, "all" last), mean with ± std error bars, one line per learner."""
    fig = go.Figure()
    for k, s in enumerate(series):
        fig.add_trace(go.Scatter(
            x=[str(v) for v in s["shots"]], y=s["mean"], mode="lines+markers", name=s["learner"],
            error_y=dict(type="data", array=s["std"], visible=True), line=dict(color=PALETTE[k % len(PALETTE)]),
            customdata=s["seeds"], hovertemplate=f"{s['learner']}<br>shots %{{x}}: %{{y:.3f}}<br>%{{customdata}} seeds<extra></extra>"))
    fig.update_xaxes(type="category", title="shots per label")
    fig.update_yaxes(title=metric_title)
    fig.update_layout(legend=LEGEND)
    return _layout(fig, height)


def joint_map(img: np.ndarray, protos: np.ndarray, labels: np.ndarray, rank_labels: Sequence[str], unit: str = "",
              height: int = 560) -> go.Figure:
    """Images (dots coloured by label) and prototypes (large diamonds, joined in rank order) in one projection."""
    rank_labels = list(rank_labels)
    values = np.asarray(labels, dtype=float)
    cmax = max(len(rank_labels) - 1, 1)
    img_text = [rank_labels[int(v)] for v in labels]
    scale = dict(colorscale="Turbo", cmin=0, cmax=cmax)
    three = img.shape[1] == 3
    Scatter = go.Scatter3d if three else go.Scatter

    def xyz(a):
        return dict(x=a[:, 0], y=a[:, 1], **({"z": a[:, 2]} if three else {}))

    fig = go.Figure([
        Scatter(**xyz(img), mode="markers", name="images", text=img_text,
                marker=dict(color=values, size=3 if three else 6, opacity=0.7, **scale,
                            colorbar=dict(title=unit or "rank", thickness=12)),
                hovertemplate="image, label %{text}<extra></extra>"),
        Scatter(**xyz(protos), mode="lines+markers", name="prototypes (rank order)", text=rank_labels[: len(protos)],
                line=dict(color="rgba(40,40,40,0.7)", width=2),
                marker=dict(color=np.arange(len(protos)), size=5 if three else 12, symbol="diamond", **scale,
                            line=dict(color="black", width=1)),
                hovertemplate="prototype of rank %{text}<extra></extra>"),
    ])
    if not three:
        fig.update_xaxes(title="component 1")
        fig.update_yaxes(title="component 2", scaleanchor="x")
    fig.update_layout(legend=LEGEND)
    return _layout(fig, height)


def confusion(matrix: np.ndarray, rank_labels: Sequence[str], height: int = 460) -> go.Figure:
    """Rank x rank confusion counts: row = true rank, column = argmax prediction."""
    labels = list(rank_labels)
    fig = go.Figure(go.Heatmap(z=matrix, x=labels, y=labels, colorscale="Blues", colorbar=dict(title="images", thickness=12),
                               hovertemplate="true %{y}, predicted %{x}: %{z} images<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category", title="true rank", scaleanchor="x", constrain="domain")
    fig.update_xaxes(type="category", title="predicted rank (argmax)", constrain="domain")
    return _layout(fig, height)


def rank_error_bars(labels: Sequence[str], mae: Sequence, std: Sequence, unit: str = "", height: int = 320) -> go.Figure:
    """Per-rank MAE of the expected rank with ± std error bars."""
    clean = [np.nan if v is None else v for v in mae]
    fig = go.Figure(go.Bar(x=list(labels), y=clean, error_y=dict(type="data", array=[0 if v is None else v for v in std]),
                           marker_color="#4c78a8", hovertemplate="rank %{x}: MAE %{y:.3f}<extra></extra>"))
    fig.update_xaxes(type="category", title=f"true rank{f' ({unit})' if unit else ''}", nticks=25)
    fig.update_yaxes(title="MAE (expected rank) ± std", rangemode="tozero")
    return _layout(fig, height)


def prototype_distances(labels: Sequence[str], own: Sequence, predicted: Sequence, height: int = 320) -> go.Figure:
    """Per rank: mean cosine distance of its images to their own prototype and to the predicted one."""
    fig = go.Figure()
    for k, (name, vals) in enumerate((("to own prototype", own), ("to predicted prototype", predicted))):
        fig.add_trace(go.Bar(x=list(labels), y=[np.nan if v is None else v for v in vals], name=name,
                             marker_color=PALETTE[k], hovertemplate=f"{name}<br>rank %{{x}}: %{{y:.4f}}<extra></extra>"))
    fig.update_xaxes(type="category", title="true rank", nticks=25)
    fig.update_yaxes(title="mean cosine distance (1 − cos)", rangemode="tozero")
    fig.update_layout(barmode="group", legend=LEGEND)
    return _layout(fig, height)
