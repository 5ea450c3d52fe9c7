"""One self-contained HTML report of checkpoints compared on one dataset (``ordinal-explorer report``,
and the Compare page's download): the metric panel, calibration, value MAE per slice, the
model-by-slice matrix, the cut-points (ROC and precision-recall curves, error rates with intervals)
and the prototypes' similarity heatmaps.

The file asks no server for anything when opened: plotly.js is inlined once and every figure is drawn
from data inside the file. The numbers are the comparison's evaluations, ``eval --json``'s for each
checkpoint (:func:`explorer.analysis.comparison.compare_predictions`), embedded verbatim as JSON
(``<script type="application/json" id="report-data">``); every number in the tables carries its full
value in ``data-value``. Nothing in it depends on the clock: the same inputs give the same file.
"""

from __future__ import annotations

import html
from typing import Any, Callable

import plotly.io as pio

from explorer.analysis import cuts, figures
from explorer.analysis.comparison import matrix_columns, row_deviations
from explorer.analysis.geometry import similarity_matrix
from explorer.analysis.slices import slice_rows
from explorer.core.errors import ExplorerError
from explorer.core.fsio import write_text
from explorer.core.jsontext import to_json
from explorer.metrics import calibration

DATA_ID = "report-data"
CONFIG = {"displaylogo": False, "responsive": True}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .55rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f5f5f5; }
.note { color: #666; font-size: .9rem; } .figure { margin: .5rem 0 1rem; }
"""


def _number(value: Any, digits: int = 4) -> str:
    """A table cell for a number (its full value in ``data-value``), or an en dash for none."""
    if value is None:
        return "<td>–</td>"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{html.escape(str(value))}</td>"
    shown = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return f'<td data-value="{value!r}">{shown}</td>'


def _text(value: Any) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _table(key: str, rows: list[dict[str, Any]]) -> str:
    """A table (``data-table`` = ``key``) of ``rows`` (column -> value; numbers as :func:`_number`)."""
    header = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_text(row.get(h)) if isinstance(row.get(h), str) else _number(row.get(h)) for h in header) + "</tr>"
                   for row in rows)
    return f'<table data-table="{html.escape(key)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class _Page:
    """The report's body as it is built: sections, and figures numbered in order (stable div ids)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures = 0

    def section(self, title: str, note: str = "") -> None:
        self.parts.append(f"<h2>{html.escape(title)}</h2>" + (f'<p class="note">{html.escape(note)}</p>' if note else ""))

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig) -> None:
        self.figures += 1
        div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"figure-{self.figures}", config=CONFIG)
        self.parts.append(f'<div class="figure">{div}</div>')


def _metric_panel(page: _Page, evaluations: dict[str, dict]) -> None:
    """Every scalar metric (rows) of every checkpoint (columns), as ``eval --json`` has it."""
    keys = list(dict.fromkeys(k for ev in evaluations.values() for k, v in ev["metrics"].items() if isinstance(v, (int, float))))
    rows = [{"metric": k, **{name: ev["metrics"].get(k) for name, ev in evaluations.items()}} for k in keys]
    page.section("Metric panel", "mae_value: MAE of the point estimate in the labels' units; the rest over the prototype rows "
                                 "(rank indices, or bins for binned methods), as eval reports them.")
    page.add(_table("metrics", rows))


def _calibration(page: _Page, named: dict[str, tuple], evaluations: dict[str, dict]) -> None:
    """The reliability diagram of every checkpoint and its ECE, MCE and 90 % interval coverage."""
    page.section("Calibration", f"Argmax confidence in {calibration.DEFAULT_BINS} equal-width bins; marker size grows with the "
                                "images in a bin. Coverage: share of labels inside the predicted 90 % central interval.")
    series = [(name, calibration.reliability_table(sp.targets, sp.probs)) for name, (_, sp) in named.items()]
    page.figure(figures.reliability(series))
    keys = ("ece", "mce", "interval_coverage")
    page.add(_table("calibration", [{"checkpoint": name, **{k: ev["metrics"].get(k) for k in keys}} for name, ev in evaluations.items()]))


def _slices(page: _Page, evaluations: dict[str, dict], field: str, unit: str) -> None:
    """Value MAE per slice of ``field`` with the bootstrap 95 % interval, every checkpoint."""
    page.section(f"Value MAE by {field}", "95 % percentile-bootstrap intervals of each slice's value MAE.")
    page.figure(figures.slice_errors([(name, ev["slices"][field]) for name, ev in evaluations.items()], field, unit))
    page.add(_table("slices", [row for name, ev in evaluations.items() for row in slice_rows(ev["slices"][field], field, name)]))


def _matrix(page: _Page, comparison: dict, unit: str) -> None:
    """The model-by-slice matrix: the figure (colour: cell less its row's mean) and its table."""
    matrix, field = comparison["matrix"], comparison["by"]
    columns = matrix_columns(matrix)
    page.section(f"Model by {field}", "Value MAE per checkpoint and slice; colour: the cell less the row's mean "
                                      "(red: worse than the checkpoint's usual, blue: better).")
    page.figure(figures.slice_matrix(matrix, row_deviations(matrix), columns, field, unit))
    rows = [{"checkpoint": name, **{c: row[c]["mae_value"] if row.get(c, {}).get("n") else None for c in columns}} for name, row in matrix.items()]
    page.add(_table("matrix", rows))


def _cut(page: _Page, named: dict[str, tuple], evaluations: dict[str, dict], key: str, unit: str) -> None:
    """One cut: the ROC and precision-recall curves with both operating points, the rates with intervals."""
    page.section(f"Cut-point {key}{' ' + unit if unit else ''}",
                 f"The score is P(y ≥ {key}); a score at or above the threshold is called at-or-above. Circles: P ≥ 0.5; "
                 "diamonds: the target-recall threshold (the smallest calling at least that share of the below-cut images below).")
    series = []
    for name, (ckpt, sp) in named.items():
        report = evaluations[name]["cuts"][key]
        thresholds = {p: report[p]["threshold"] for p in ("default", "target_recall")}
        view = cuts.score_view(sp.outputs(), ckpt.predictor(), float(key), thresholds)
        series.append((name if report["auc"] is None else f"{name} (AUC {report['auc']:.3f})", view["curves"], view["points"]))
    page.figure(figures.cut_curves(series))
    reports = {name: ev["cuts"][key] for name, ev in evaluations.items()}
    page.add(_table(f"cut-{key}", cuts.operating_rows(reports)))
    for field in next(iter(reports.values())).get("slices", {}):
        page.add(f"<h3>Rates by {html.escape(field)}</h3>" + _table(f"cut-{key}-{field}", cuts.slice_rate_rows(reports, field)))
    for name, ev in evaluations.items():
        if ev["cuts"][key].get("note"):
            page.add(f'<p class="note">{html.escape(name)}: {html.escape(ev["cuts"][key]["note"])}</p>')


def _heatmaps(page: _Page, named: dict[str, tuple]) -> None:
    """The cosine similarity of each checkpoint's prototypes, rank by rank."""
    page.section("Prototype similarity", "Cosine similarity between the prototypes (rows and columns in rank order).")
    for name, (ckpt, sp) in named.items():
        classes = ckpt.classes
        page.add(f"<h3>{html.escape(name)}</h3>")
        page.figure(figures.heatmap(similarity_matrix(sp.prototypes), classes.labels, colorbar_title="cosine", unit=classes.unit,
                                    height=420))


def _document(title: str, body: str, data: dict) -> str:
    from plotly.offline import get_plotlyjs

    payload = to_json(data).replace("</", "<\\/")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n"
            f'<script type="application/json" id="{DATA_ID}">{payload}</script>\n</body></html>\n')


def build_report(comparison: dict[str, Any], progress: Callable[[int, int, str], None] | None = None) -> str:
    """The HTML text of the report of ``comparison`` (:func:`~explorer.analysis.comparison.compare_checkpoints`
    with ``keep_predictions``, or ``compare_predictions`` with ``predictions`` added)."""
    named, evaluations, field = comparison["predictions"], comparison["evaluations"], comparison["by"]
    first = next(iter(named.values()))[0]
    unit = first.ranks.unit
    keys = list(next(iter(evaluations.values())).get("cuts", {}))
    steps = [lambda p: _metric_panel(p, evaluations), lambda p: _calibration(p, named, evaluations),
             lambda p: _slices(p, evaluations, field, unit), lambda p: _matrix(p, comparison, unit),
             *[lambda p, k=k: _cut(p, named, evaluations, k, unit) for k in keys], lambda p: _heatmaps(p, named)]
    page = _Page()
    split = next(iter(evaluations.values()))["split"]
    page.add(f'<p class="note">{len(named)} checkpoint{"s" if len(named) != 1 else ""} on {html.escape(comparison["dataset"])} '
             f"[{html.escape(split)}]: {html.escape(', '.join(named))}.</p>")
    for i, step in enumerate(steps):
        if progress:
            progress(i, len(steps), "building the report")
        step(page)
    if progress:
        progress(len(steps), len(steps), "building the report")
    data = {k: comparison[k] for k in ("by", "dataset", "matrix", "evaluations")}
    return _document(f"Report: {comparison['dataset']} [{split}]", "\n".join(page.parts), {**data, "split": split})


def write_report(path: str, text: str) -> None:
    """Write the report's HTML ``text`` to ``path`` (atomically); one sentence when it cannot be written."""
    try:
        write_text(path, text)
    except OSError as exc:
        raise ExplorerError(f"Cannot write the report {path}: {exc.strerror or exc}.") from exc
