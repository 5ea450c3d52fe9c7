"""Compare below its checkpoint picker: 2 to 4 checkpoints side by side (heatmaps, ordinality, metrics,
per-rank errors, one image), then the sections (calibration, where they fail, decisions at a cut-point,
the model-by-slice matrix, sweep results)."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app_pages.ui import charts, errors, formatting, pickers, resources, sweeps
from app_pages.ui.sections import on_request
from explorer.analysis import figures
from explorer.core import settings
from explorer.core.errors import ExplorerError
from explorer.core.fsio import bytes_digest
from explorer.data import faces
from explorer.predict.uploads import overlay_distributions, prepare_upload
from explorer.store import library as lib


def side_by_side(entries: list[lib.LibraryEntry], chosen: list[lib.LibraryEntry]) -> None:
    """Everything Compare shows for the chosen checkpoints (``entries``: the whole library, for the matrix)."""
    views = formatting.VIEWS
    view = st.segmented_control("Heatmap view", list(views), format_func=views.get, default="cosine", key="compare-view", bind="query-params") or "cosine"
    ckpts = [resources.load_checkpoint(e) for e in chosen]
    geos = [resources.geometry(e) for e in chosen]
    _heatmaps(chosen, ckpts, [g["views"][view] for g in geos], view)
    _ordinality(chosen, geos)
    _metrics(chosen)
    _demo_seeds(chosen)
    st.subheader("Predicted distributions for the same image")
    _same_image(chosen, ckpts)
    st.caption("The sections below evaluate the checkpoints on a dataset; each computes once opened (the link remembers which are open).")
    sections = "app_pages.ui.sections.compare"  # each section's module imported once it is opened
    on_request([("Calibration", "open-calibration", lambda: import_module(sections).calibration_section(chosen)),
                ("Where they fail", "open-fails", lambda: import_module(sections).compare_failures(chosen)),
                ("Decide at a cut-point", "open-decide", lambda: import_module("app_pages.ui.sections.decide").compare_decide(chosen)),
                ("Model by slice", "open-matrix", lambda: import_module("app_pages.ui.sections.matrix").matrix_section(entries, chosen))])
    with errors.guard("the sweep results"):
        sweeps.sweep_results_section()


def demo_seeds_table(results: Path) -> str | None:
    """The mean ± std table over seeds from the bundled demo's RESULTS.md (None when it has none)."""
    text = results.read_text(encoding="utf-8") if results.is_file() else ""
    start = text.find("Over seeds")
    return text[start:].strip() if start >= 0 else None


def _demo_seeds(chosen) -> None:
    """For bundled demo checkpoints: the demo table over 3 seeds, so one draw is seen with its spread."""
    demo = settings.REPO_ROOT / "checkpoints"
    if not any(e.path.parent.resolve() == demo.resolve() for e in chosen):
        return
    table = demo_seeds_table(demo / "RESULTS.md")
    if table:
        with st.expander("The bundled demo over 3 seeds (mean ± std)"):
            st.markdown(table)


def _heatmaps(chosen, ckpts, mats, view: str) -> None:
    """One heatmap per checkpoint on one colour scale, two per row for four, else all in one row."""
    zmin, zmax = min(float(m.min()) for m in mats), max(float(m.max()) for m in mats)
    st.subheader("Similarity heatmaps")
    st.caption(f"{formatting.VIEW_TITLES[view]}, all ranks, one colour scale ({zmin:.3f} to {zmax:.3f}).")
    per_row = 2 if len(chosen) == 4 else len(chosen)
    for start in range(0, len(chosen), per_row):
        cols = st.columns(per_row)
        for k, col in enumerate(cols):
            i = start + k
            if i >= len(chosen):
                break
            with col:
                st.markdown(f"**{chosen[i].name}**")
                with errors.guard(f"the heatmap of {chosen[i].name}"):
                    fig = figures.heatmap(mats[i], ckpts[i].classes.labels, zmin=zmin, zmax=zmax, height=360,
                                         unit=ckpts[i].classes.unit, show_scale=True)
                    charts.chart(fig, f"compare-heat-{i}", f"{chosen[i].name}-similarity-{view}")


def _ordinality(chosen, geos) -> None:
    st.subheader("Ordinality")
    rows = []
    for e, g in zip(chosen, geos):
        rep = g["report"]
        row = {"checkpoint": e.name, "method": e.method, "ranks": e.num_ranks,
               "ordinality %": 100 * rep["ordinality"], "violations %": 100 * rep["violation_rate"],
               "mean adjacent cosine": float(np.mean(g["adjacent"]))}
        row.update({f"span {s} %": 100 * v for s, v in rep["spans"].items()})
        rows.append(row)
    # one column per checkpoint (2-4), one row per figure: never wider than the page, however many spans
    table = pd.DataFrame(rows).set_index("checkpoint").T
    table = table.map(lambda v: f"{v:.2f}" if isinstance(v, float) else str(v))
    st.dataframe(table.rename_axis("figure").reset_index(), hide_index=True, width="stretch")


def _metrics(chosen) -> None:
    """The evaluation metrics stored in each checkpoint, and their per-rank errors when stored."""
    st.subheader("Evaluation metrics")
    metric_rows = []
    for e in chosen:
        km = lib.key_metrics(e.metrics)
        split = km.pop("split", None)
        metric_rows.append({"checkpoint": e.name, "split": "none stored" if split is None else (split or "unspecified"), **km})
    st.dataframe(pd.DataFrame(metric_rows), hide_index=True, width="stretch")
    errs = [(e, lib.per_rank_mae(e.metrics)) for e in chosen]
    with_errs = [(e, pr) for e, pr in errs if pr is not None]
    if not with_errs:
        st.caption("None of these checkpoints stores per-rank errors (evaluation results with per_rank_mae).")
        return
    series = []
    for e, (split, values) in with_errs:
        labels = resources.load_checkpoint(e).ranks.labels
        series.append((f"{e.name} ({split})" if split else e.name, labels[: len(values)], values))
    st.markdown("**Per-rank MAE**")
    units = {resources.load_checkpoint(e).ranks.unit for e, _ in with_errs}
    charts.chart(charts.per_rank_errors(series, unit=units.pop() if len(units) == 1 else ""), "compare-per-rank", "per-rank-mae")
    missing = [e.name for e, pr in errs if pr is None]
    if missing:
        st.caption(f"No per-rank errors stored for {', '.join(missing)}.")


def _same_image(chosen, ckpts) -> None:
    c1, c2 = st.columns([3, 1])
    upload = c1.file_uploader("Image", type=formatting.IMAGE_TYPES, key="compare-image")
    whole = c2.toggle("Use the whole image", value=False, key="compare-whole", bind="query-params",
                      help="Off: the largest face (plus a margin) is cropped when one is found; pick another when there are several.")
    if upload is None:
        st.caption("Upload an image to overlay the checkpoints' predicted distributions.")
        return
    data = upload.getvalue()
    digest = bytes_digest(data)
    item = prepare_upload(data, upload.name, use_whole_image=whole, face_index=pickers.face_choices("compare").get(digest))
    if not item.ok:
        st.error(item.error)
        return
    crop = item.crop
    left, right = st.columns([1, 3])
    with left:
        st.image(faces.annotate(item.image, crop, max_side=320), output_format="JPEG")
        if crop.num_faces > 1:
            pickers.face_picker(crop, digest, "compare")
        st.caption(crop.note)
    preds = _predict_each(chosen, ckpts, crop.image, right.warning)
    series = [(name, p.ranks.value_array, p.probs[0], p.record(0)) for name, p in preds]
    units = {p.ranks.unit for _, p in preds}
    unit = next(iter(units)) if len(units) == 1 else ""
    if len({(tuple(p.ranks.values), p.ranks.unit) for _, p in preds}) > 1:
        right.caption("These checkpoints have different ranks; their distributions share the x axis by rank value.")
    with right:
        if series:
            charts.chart(charts.overlaid_distributions(series, unit=unit), "compare-dists", "predicted-distributions")
            st.dataframe(pd.DataFrame([{"checkpoint": n, "expected": round(r["value"], 2), "argmax": r["argmax_label"],
                                        "median": r["median_value"], "90% interval": f"{r['interval_values'][0]:g}–{r['interval_values'][1]:g}"}
                                       for n, _v, _p, r in series]), hide_index=True, width="stretch")


def _predict_each(chosen, ckpts, image, warn) -> list:
    """``(name, Prediction)`` of every checkpoint whose backbone is here: one encoding per backbone,
    inside its handle's ``use()``."""
    groups: dict[int, tuple] = {}
    for i, (e, ckpt) in enumerate(zip(chosen, ckpts)):
        try:
            handle = resources.backbone_for(e)
        except ExplorerError as exc:
            warn(f"{e.name}: {exc}")
            continue
        groups.setdefault(id(handle.backbone), (handle, []))[1].append((i, ckpt.predictor()))
    found = {}
    for handle, predictors in groups.values():
        with handle.use() as backbone:
            found.update(overlay_distributions(image, predictors, backbone))
    return [(chosen[i].name, found[i]) for i in sorted(found)]
