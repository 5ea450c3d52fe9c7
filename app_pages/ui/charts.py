"""The plotly figures only the app draws (presentation only: the numbers come from ``explorer``; the
figures the HTML report shares with the pages are in :mod:`explorer.analysis.figures`) and how a page
shows any figure: :func:`chart` (toolbar with a PNG download named after the figure) and :func:`figure`
(the same plus a CSV download of the data behind it)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from explorer.analysis.figures import LEGEND, PALETTE
from explorer.analysis.figures import layout as fig_layout

# --- showing a figure ------------------------------------------------------------------------------


def plot_config(filename: str) -> dict:
    """Plotly chart config: toolbar shown, PNG download named after the figure."""
    return {"displaylogo": False, "displayModeBar": True,
            "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}


def chart(fig: go.Figure, key: str, filename: str | None = None) -> None:
    """A plotly chart with its toolbar (PNG named ``filename``, by default the key)."""
    st.plotly_chart(fig, key=key, config=plot_config(filename or key))


def figure(fig: go.Figure, data: pd.DataFrame, key: str, filename: str, on_select=None) -> None:
    """A plotly chart (PNG from its toolbar) and a button that downloads its data as CSV; ``on_select``:
    a callback run when points are box- or lasso-selected."""
    select = {"on_select": on_select, "selection_mode": ("box", "lasso")} if on_select else {}
    st.plotly_chart(fig, key=key, config=plot_config(filename), **select)
    csv_button(data, key, filename)


def csv_button(data: pd.DataFrame, key: str, filename: str, label: str = "Data (CSV)") -> None:
    """A download button for ``data`` as ``<filename>.csv`` (no rerun on click)."""
    st.download_button(label, data.to_csv(index=False).encode(), file_name=f"{filename}.csv", mime="text/csv",
                       key=f"{key}-csv", on_click="ignore", icon=":material/download:")


# --- geometry of the prototypes ----------------------------------------------------------------------


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
    return fig_layout(fig, height)


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
    return fig_layout(fig, height)


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
    return fig_layout(fig, height, title)


# --- predicted distributions ---------------------------------------------------------------------


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
    return fig_layout(fig, height, title)


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
    return fig_layout(fig, height)


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
    return fig_layout(fig, height)


# --- the interpolation lab ---------------------------------------------------------------------------


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
    fig_layout(fig, height)
    fig.update_layout(margin=dict(t=40))
    return fig


# --- the analysis sections: calibration, curves, joint map, confusion, per-rank errors ----------------


def curves(series: list[dict], metric_title: str, height: int = 360) -> go.Figure:
    """Metric vs shots (category axis, "all" last), mean with ± std error bars, one line per learner."""
    fig = go.Figure()
    for k, s in enumerate(series):
        fig.add_trace(go.Scatter(
            x=[str(v) for v in s["shots"]], y=s["mean"], mode="lines+markers", name=s["method"],
            error_y=dict(type="data", array=s["std"], visible=True), line=dict(color=PALETTE[k % len(PALETTE)]),
            customdata=s["seeds"], hovertemplate=f"{s['method']}<br>shots %{{x}}: %{{y:.3f}}<br>%{{customdata}} seeds<extra></extra>"))
    fig.update_xaxes(type="category", title="shots per label")
    fig.update_yaxes(title=metric_title)
    fig.update_layout(legend=LEGEND)
    return fig_layout(fig, height, room_above=True)


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
    return fig_layout(fig, height, room_above=True)


def confusion(matrix: np.ndarray, rank_labels: Sequence[str], height: int = 460) -> go.Figure:
    """Rank x rank confusion counts: row = true rank, column = argmax prediction."""
    labels = list(rank_labels)
    fig = go.Figure(go.Heatmap(z=matrix, x=labels, y=labels, colorscale="Blues", colorbar=dict(title="images", thickness=12),
                               hovertemplate="true %{y}, predicted %{x}: %{z} images<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category", title="true rank", scaleanchor="x", constrain="domain")
    fig.update_xaxes(type="category", title="predicted rank (argmax)", constrain="domain")
    return fig_layout(fig, height, room_above=True)


def rank_error_bars(labels: Sequence[str], mae: Sequence, std: Sequence, unit: str = "", height: int = 320) -> go.Figure:
    """Per-rank MAE of the expected rank with ± std error bars."""
    clean = [np.nan if v is None else v for v in mae]
    fig = go.Figure(go.Bar(x=list(labels), y=clean, error_y=dict(type="data", array=[0 if v is None else v for v in std]),
                           marker_color="#4c78a8", hovertemplate="rank %{x}: MAE %{y:.3f}<extra></extra>"))
    fig.update_xaxes(type="category", title=f"true rank{f' ({unit})' if unit else ''}", nticks=25)
    fig.update_yaxes(title="MAE (expected rank) ± std", rangemode="tozero")
    return fig_layout(fig, height, room_above=True)


def prototype_distances(labels: Sequence[str], own: Sequence, predicted: Sequence, height: int = 320) -> go.Figure:
    """Per rank: mean cosine distance of its images to their own prototype and to the predicted one."""
    fig = go.Figure()
    for k, (name, vals) in enumerate((("to own prototype", own), ("to predicted prototype", predicted))):
        fig.add_trace(go.Bar(x=list(labels), y=[np.nan if v is None else v for v in vals], name=name,
                             marker_color=PALETTE[k], hovertemplate=f"{name}<br>rank %{{x}}: %{{y:.4f}}<extra></extra>"))
    fig.update_xaxes(type="category", title="true rank", nticks=25)
    fig.update_yaxes(title="mean cosine distance (1 − cos)", rangemode="tozero")
    fig.update_layout(barmode="group", legend=LEGEND)
    return fig_layout(fig, height, room_above=True)


# --- where it fails ---------------------------------------------------------------------------------------


def rank_axis(values: Sequence[float], positions: Sequence[float], rho: float, unit: str = "", height: int = 340) -> go.Figure:
    """Each image's position on the rank axis against its label's value, with Spearman's rho in the title."""
    fig = go.Figure(go.Scatter(x=list(values), y=list(positions), mode="markers", marker=dict(size=6, opacity=0.6, color=PALETTE[0]),
                               hovertemplate="label %{x}<br>position %{y:.4f}<extra></extra>"))
    fig.update_xaxes(title=f"true label ({unit})" if unit else "true label")
    fig.update_yaxes(title="position on the rank axis (cosine units)")
    return fig_layout(fig, height, title=f"Spearman ρ = {rho:.3f}")
