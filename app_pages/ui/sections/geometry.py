"""The Geometry page's sections below its own figures: the nearest vocabulary words of the learned
tokens, images and prototypes in one map (metrics, distances, per-rank errors, confusion matrix and
the gallery of a selection) and where it fails (value MAE per slice and band, the rank axis, the
worst images)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app_pages.ui import charts, gallery, pickers, resources
from app_pages.ui.formatting import PROJECTIONS, fmt_pct
from app_pages.ui.sections import slice_tables
from explorer.analysis import decode, figures, geometry, maps, slices
from explorer.core import settings
from explorer.core.errors import ExplorerError
from explorer.metrics import calibration
from explorer.metrics.ordinal import spearman
from explorer.store import library as lib

# --- nearest words -------------------------------------------------------------------------------------


def decode_section(entry: lib.LibraryEntry, ckpt) -> None:
    """Nearest vocabulary tokens of every learned context and rank token."""
    if not decode.has_learned_tokens(ckpt):
        st.info(decode.decode_checkpoint(ckpt, None)["message"])
        return
    top = int(st.columns([1, 3])[0].number_input("Nearest tokens per learned token", 1, 20, 5, key="decode-top", bind="query-params"))
    decoded = resources.decoded(entry, top)
    rows = pd.DataFrame(decode.decode_rows(decoded))
    first = rows[rows["neighbour"] == 1].drop(columns=["neighbour"])
    others = rows.groupby(["group", "slot", "position"], sort=False)["token"].apply(lambda t: " · ".join(t.iloc[1:]))
    first = first.merge(others.rename("next nearest").reset_index(), on=["group", "slot", "position"])
    tabs = st.tabs([t for t, g in (("Context", "context"), ("Ranks (interpolated)" if decoded["bases"] else "Ranks", "rank"),
                                   ("Bases", "base")) if (first["group"] == g).any()])
    for tab, group in zip(tabs, [g for g in ("context", "rank", "base") if (first["group"] == g).any()]):
        with tab:
            part = first[first["group"] == group].drop(columns=["group"])
            st.dataframe(part, hide_index=True, width="stretch", height=min(420, 38 + 35 * len(part)),
                         column_config={"distance": st.column_config.NumberColumn("Euclidean", format="%.4f"),
                                        "cosine": st.column_config.NumberColumn(format="%.4f")})
    st.caption("Nearest by Euclidean distance in the backbone's token embedding; context positions are "
               + ("per rank." if decoded["context_per_rank"] else "shared by every rank.")
               + (" Bases are the B learned rank embeddings; every rank interpolates them." if decoded["bases"] else ""))
    charts.csv_button(rows, "decode", f"{entry.name}-nearest-tokens", "All neighbours (CSV)")


# --- images and prototypes in one map ------------------------------------------------------------------


def map_section(entry: lib.LibraryEntry, ckpt) -> None:
    """Images and rank prototypes projected together; distances, confusion matrix, per-rank errors."""
    spec, split = pickers.dataset_split("map", pickers.trained_on([entry]))
    if not spec:
        st.caption("Give a dataset spec to place its images among the prototypes.")
        return
    p1, p2, p3, p4 = st.columns([2, 1, 1, 2])
    method = p1.segmented_control("Projection", list(PROJECTIONS), format_func=PROJECTIONS.get, default="pca", key="map-method", bind="query-params") or "pca"
    dims = p2.segmented_control("Dimensions", [2, 3], format_func=lambda d: f"{d}-D", default=2, key="map-dims", bind="query-params") or 2
    seed = int(p3.number_input("Seed", 0, 10_000, 0, key="map-seed", bind="query-params", disabled=method == "pca"))
    close = p4.toggle("Close the modality gap", value=True, key="map-gap", bind="query-params",
                      help="Centre images and prototypes separately before projecting: CLIP keeps the two far apart, "
                           "which otherwise dominates the map. Distances below are always the raw cosine ones.")
    try:
        with st.spinner(f"Embedding {spec} [{split}]…"):
            sp = resources.split_predictions(entry, spec, split)
    except ExplorerError as exc:
        st.warning(str(exc))
        return
    ranks, protos = ckpt.ranks, ckpt.prototypes.matrix.numpy()
    with st.spinner(f"Computing the {PROJECTIONS[method]} layout…"):
        img, pro, _ = maps.joint_layout(sp.features, protos, method, int(dims), seed, cache_dir=settings.cache_folder(),
                                        close_gap=close)
    _metrics_line(sp)
    rank_labels = ckpt.classes.labels
    data = pd.DataFrame(maps.joint_map_rows(img, pro, sp.targets, sp.argmax, rank_labels))
    select = (lambda: gallery.remember_selection("map-joint")) if int(dims) == 2 else None
    charts.figure(charts.joint_map(img, pro, sp.targets, rank_labels, unit=ranks.unit), data, "map-joint",
                  f"{entry.name}-joint-map", on_select=select)
    st.caption(f"{len(sp.labels)} images of {spec} [{split}] coloured by label, and the {len(protos)} prototypes joined in "
               "rank order, in one projection" + (" after centring each group (modality gap closed)" if close else "")
               + ". UMAP / t-SNE layouts are kept on disk by content; box- or lasso-select images (2-D) to see them.")
    gallery.selection_gallery(ckpt, sp)
    _rank_panels(entry, ckpt, sp, protos)


def _metrics_line(sp: maps.SplitPredictions) -> None:
    m = calibration.calibration_panel(sp.targets, sp.probs)
    cols = st.columns(4)
    cols[0].metric("MAE (expected)", f"{np.mean(np.abs(sp.expected - sp.targets)):.3f}")
    cols[1].metric("Accuracy (argmax)", fmt_pct(float(np.mean(sp.argmax == sp.targets))))
    cols[2].metric("ECE / MCE", f"{m['ece']:.3f} / {m['mce']:.3f}", help="15 equal-width bins of the argmax confidence")
    cols[3].metric("90 % interval coverage", fmt_pct(m["interval_coverage"]), help="ideal: 90 %")
    if sp.note:
        st.caption(sp.note)


def _rank_panels(entry, ckpt, sp: maps.SplitPredictions, protos: np.ndarray) -> None:
    labels = ckpt.classes.labels
    R = len(labels)
    left, right = st.columns(2)
    with left:
        st.markdown("**Distance to the own vs the predicted prototype** (per true rank)")
        d = pd.DataFrame(maps.prototype_distances(sp.features, sp.targets, protos, sp.argmax))
        d.insert(1, "label", labels)
        charts.figure(charts.prototype_distances(labels, d["to_own"].tolist(), d["to_predicted"].tolist()), d,
                      "map-distances", f"{entry.name}-prototype-distances")
    with right:
        st.markdown("**Per-rank error** · MAE of the expected rank ± std")
        e = pd.DataFrame(maps.per_rank_errors(sp.targets, sp.expected, R))
        e.insert(1, "label", labels)
        charts.figure(charts.rank_error_bars(labels, e["mae"].tolist(), e["std"].tolist(), ckpt.ranks.unit), e,
                      "map-errors", f"{entry.name}-per-rank-errors")
    left, right = st.columns(2)
    with left:
        st.markdown("**Confusion matrix** · rows: true rank, columns: argmax prediction")
        cm = maps.confusion_matrix(sp.targets, sp.argmax, R)
        frame = pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=labels).reset_index()
        charts.figure(charts.confusion(cm, labels), frame, "map-confusion", f"{entry.name}-confusion")
    with right:
        st.markdown("**Per rank**")
        table = e[["label", "n", "mae", "std"]].rename(columns={"mae": "MAE", "std": "MAE std"})
        table["accuracy"] = [cm[r, r] / n if n else None for r, n in enumerate(table["n"])]
        st.dataframe(table, hide_index=True, width="stretch", height=460,
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("MAE", "MAE std", "accuracy")})


# --- where it fails --------------------------------------------------------------------------------------


def failure_section(entry, ckpt) -> None:
    """Geometry: value MAE per slice and by band with intervals, the rank axis and the worst images."""
    spec, split = pickers.dataset_split("fails", pickers.trained_on([entry]))
    if not spec:
        st.caption("Give a dataset spec to see the errors per slice and the worst images.")
        return
    try:
        with st.spinner(f"Evaluating on {spec} [{split}]…"):
            sp = resources.split_predictions(entry, spec, split)
        fields = slice_tables.fields_picker(sp, "fails-by")
        report = slice_tables.slice_report(ckpt, sp, fields)
    except ExplorerError as exc:
        st.warning(str(exc))
        return
    for field, col in zip(fields, st.columns(min(len(fields), 2)) * len(fields)):
        with col:
            st.markdown(f"**Value MAE by {field}** · 95 % bootstrap intervals")
            table = slice_tables.slice_table(report, field)
            charts.figure(figures.slice_errors([(entry.name, report["slices"][field])], field, ckpt.ranks.unit),
                          table, f"fails-{field}", f"{entry.name}-mae-by-{field}")
            slice_tables.show_slice_table(table)
            st.caption(slice_tables.gap_caption(report, field))
    _rank_axis_view(entry, ckpt, sp)
    _worst_gallery(entry, ckpt, sp)


def _rank_axis_view(entry, ckpt, sp) -> None:
    axis = st.segmented_control("Rank axis", list(geometry.AXES), default="ends", key="fails-axis", bind="query-params",
                                format_func={"ends": "first → last prototype", "principal": "principal direction"}.get) or "ends"
    positions = geometry.rank_axis_positions(sp.features, sp.prototypes, axis)
    truth = ckpt.ranks.value_array[sp.labels]
    rho = spearman(truth, positions)
    data = pd.DataFrame({"path": [s.path for s in sp.samples], "label": truth, "position": positions})
    charts.figure(charts.rank_axis(truth, positions, rho, ckpt.ranks.unit), data, "fails-axis-map", f"{entry.name}-rank-axis")
    st.caption("How much of the ordering lives on one direction of the embedding: each image's position on the axis "
               "from the first to the last prototype (or the prototypes' principal direction) against its label.")


def _worst_gallery(entry, ckpt, sp) -> None:
    count = int(st.slider("Worst images", 4, 48, 12, step=4, key="fails-worst", bind="query-params"))
    rows = slices.error_rows(sp.outputs(), sp.samples, ckpt.ranks, ckpt.classes, sp.found)
    st.markdown(f"**The {min(count, len(rows))} largest errors** of {len(rows)}")
    order = slices.worst_first(sp.outputs(), ckpt.ranks)[:count]
    gallery.gallery(ckpt, sp, order, "fails-gallery")
    charts.csv_button(pd.DataFrame(rows), "fails-errors", f"{entry.name}-errors", "Every image's error (CSV)")
