"""Analysis sections (not a page) of the Geometry and Compare pages: nearest-word decoding, images and prototypes
in one map (with confusion matrix and per-rank errors) and reliability diagrams (a sweep's curves: app_pages/ui/sweeps.py).

Every figure keeps plotly's toolbar (PNG download) and has a CSV download of the data behind it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app_pages.ui import analysis_charts as ac
from app_pages.ui import gallery, resources
from app_pages.ui.formatting import fmt_pct
from explorer.analysis import decode, maps
from explorer.core import settings
from explorer.core.errors import ExplorerError
from explorer.metrics import calibration
from explorer.store import library as lib

SPLITS = ("test", "val", "train", "all")
METHODS = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE"}
METRIC_TITLES = {"mae_exp": "test MAE (expected rank)", "acc_max": "test accuracy (argmax)"}


def plot_config(filename: str) -> dict:
    """Plotly chart config: toolbar shown, PNG download named after the figure."""
    return {"displaylogo": False, "displayModeBar": True,
            "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}


def figure(fig, data: pd.DataFrame, key: str, filename: str, on_select=None) -> None:
    """A plotly chart (PNG from its toolbar) and a button that downloads its data as CSV; ``on_select``:
    a callback run when points are box- or lasso-selected."""
    select = {"on_select": on_select, "selection_mode": ("box", "lasso")} if on_select else {}
    st.plotly_chart(fig, key=key, config=plot_config(filename), **select)
    csv_button(data, key, filename)


def csv_button(data: pd.DataFrame, key: str, filename: str, label: str = "Data (CSV)") -> None:
    """A download button for ``data`` as ``<filename>.csv`` (no rerun on click)."""
    st.download_button(label, data.to_csv(index=False).encode(), file_name=f"{filename}.csv", mime="text/csv",
                       key=f"{key}-csv", on_click="ignore", icon=":material/download:")


def _feature_dir() -> str:
    return str(settings.cache_folder() / "features")


@st.cache_data(show_spinner=False, max_entries=32)
def _split(content_hash: str, dataset: str, split: str, backbone_id: str, _path: str, _handle):
    ckpt = resources.checkpoint_of(_path, content_hash)
    with _handle.use() as backbone:
        return maps.split_predictions(ckpt, backbone, dataset, split, cache_dir=_feature_dir())


def split_predictions(entry: lib.LibraryEntry, dataset: str, split: str) -> maps.SplitPredictions:
    """A checkpoint's features, labels and probabilities on a dataset split (cached by content and spec)."""
    handle = resources.backbone_for(entry)
    return _split(entry.content_hash, dataset.strip(), split, handle.backbone_id, str(entry.path), handle)


# --- Geometry: decoding ----------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def _decode(content_hash: str, top: int, backbone_id: str, _path: str, _handle) -> dict:
    with _handle.use() as backbone:
        return decode.decode_checkpoint(resources.checkpoint_of(_path, content_hash), backbone, top)


def decode_section(entry: lib.LibraryEntry, ckpt) -> None:
    """Nearest vocabulary tokens of every learned context and rank token."""
    st.subheader("Nearest words of the learned tokens")
    if not decode.has_learned_tokens(ckpt):
        st.info(decode.decode_checkpoint(ckpt, None)["message"])
        return
    top = int(st.columns([1, 3])[0].number_input("Nearest tokens per learned token", 1, 20, 5, key="decode-top"))
    handle = resources.backbone_for(entry)
    decoded = _decode(entry.content_hash, top, handle.backbone_id, str(entry.path), handle)
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
    csv_button(rows, "decode", f"{entry.name}-nearest-tokens", "All neighbours (CSV)")


# --- Geometry: images and prototypes in one map ------------------------------------------------------


def trained_on(entries: list[lib.LibraryEntry]) -> str:
    """The dataset the checkpoints were trained on, when they all share one (else empty)."""
    specs = {(e.summary.get("training") or {}).get("dataset") or "" for e in entries}
    return specs.pop() if len(specs) == 1 else ""


def _dataset_inputs(prefix: str, default: str = "") -> tuple[str, str]:
    c1, c2 = st.columns([3, 1])
    spec = c1.text_input("Dataset", default, key=f"{prefix}-dataset",
                         help="A dataset spec, e.g. dots:20 (the bundled demo checkpoints are trained on it), utkface:DIR; "
                              "by default the one the checkpoint was trained on.")
    split = c2.selectbox("Split", SPLITS, key=f"{prefix}-split")
    return spec.strip(), split


def map_section(entry: lib.LibraryEntry, ckpt) -> None:
    """Images and rank prototypes projected together; distances, confusion matrix, per-rank errors."""
    st.subheader("Images and prototypes in one map")
    spec, split = _dataset_inputs("map", trained_on([entry]))
    if not spec:
        st.caption("Give a dataset spec to place its images among the prototypes.")
        return
    p1, p2, p3, p4 = st.columns([2, 1, 1, 2])
    method = p1.segmented_control("Projection", list(METHODS), format_func=METHODS.get, default="pca", key="map-method") or "pca"
    dims = p2.segmented_control("Dimensions", [2, 3], format_func=lambda d: f"{d}-D", default=2, key="map-dims") or 2
    seed = int(p3.number_input("Seed", 0, 10_000, 0, key="map-seed", disabled=method == "pca"))
    close = p4.toggle("Close the modality gap", value=True, key="map-gap",
                      help="Centre images and prototypes separately before projecting: CLIP keeps the two far apart, "
                           "which otherwise dominates the map. Distances below are always the raw cosine ones.")
    try:
        with st.spinner(f"Embedding {spec} [{split}]…"):
            sp = split_predictions(entry, spec, split)
    except ExplorerError as exc:
        st.warning(str(exc))
        return
    ranks, protos = ckpt.ranks, ckpt.prototypes.matrix.numpy()
    with st.spinner(f"Computing the {METHODS[method]} layout…"):
        img, pro, _ = maps.joint_layout(sp.features, protos, method, int(dims), seed, cache_dir=settings.cache_folder(),
                                        close_gap=close)
    _metrics_line(sp)
    rank_labels = ckpt.classes.labels
    data = pd.DataFrame(maps.joint_map_rows(img, pro, sp.targets, sp.argmax, rank_labels))
    select = (lambda: gallery.remember_selection("map-joint")) if int(dims) == 2 else None
    figure(ac.joint_map(img, pro, sp.targets, rank_labels, unit=ranks.unit), data, "map-joint", f"{entry.name}-joint-map",
           on_select=select)
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
        figure(ac.prototype_distances(labels, d["to_own"].tolist(), d["to_predicted"].tolist()), d, "map-distances",
               f"{entry.name}-prototype-distances")
    with right:
        st.markdown("**Per-rank error** · MAE of the expected rank ± std")
        e = pd.DataFrame(maps.per_rank_errors(sp.targets, sp.expected, R))
        e.insert(1, "label", labels)
        figure(ac.rank_error_bars(labels, e["mae"].tolist(), e["std"].tolist(), ckpt.ranks.unit), e, "map-errors",
               f"{entry.name}-per-rank-errors")
    left, right = st.columns(2)
    with left:
        st.markdown("**Confusion matrix** · rows: true rank, columns: argmax prediction")
        cm = maps.confusion_matrix(sp.targets, sp.argmax, R)
        frame = pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=labels).reset_index()
        figure(ac.confusion(cm, labels), frame, "map-confusion", f"{entry.name}-confusion")
    with right:
        st.markdown("**Per rank**")
        table = e[["label", "n", "mae", "std"]].rename(columns={"mae": "MAE", "std": "MAE std"})
        table["accuracy"] = [cm[r, r] / n if n else None for r, n in enumerate(table["n"])]
        st.dataframe(table, hide_index=True, width="stretch", height=460,
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("MAE", "MAE std", "accuracy")})


# --- Compare: reliability diagrams ---------------------------------------------------------------------


def calibration_section(chosen: list[lib.LibraryEntry]) -> None:
    """Reliability diagram (confidence vs accuracy per bin) of the chosen checkpoints on one dataset split."""
    st.subheader("Calibration")
    spec, split = _dataset_inputs("calibration", trained_on(chosen))
    bins = int(st.slider("Bins", 5, 30, calibration.DEFAULT_BINS, key="calibration-bins"))
    if not spec:
        st.caption("Give a dataset spec to evaluate the checkpoints on.")
        return
    series, rows, tables = [], [], []
    for e in chosen:
        try:
            with st.spinner(f"Evaluating {e.name} on {spec} [{split}]…"):
                sp = split_predictions(e, spec, split)
        except ExplorerError as exc:
            st.warning(str(exc) if e.name in str(exc) else f"{e.name}: {exc}")
            continue
        if sp.note:
            st.caption(f"{e.name}: {sp.note}")
        table = calibration.reliability_table(sp.targets, sp.probs, n_bins=bins)
        series.append((e.name, table))
        tables.append(pd.DataFrame(table).assign(checkpoint=e.name))
        rows.append({"checkpoint": e.name, "n": len(sp.targets), "ECE": calibration.ece(sp.targets, sp.probs, n_bins=bins),
                     "MCE": calibration.mce(sp.targets, sp.probs, n_bins=bins),
                     "90 % coverage": calibration.interval_coverage(sp.targets, sp.probs),
                     "accuracy": float(np.mean(sp.argmax == sp.targets))})
    if not series:
        return
    left, right = st.columns([3, 2])
    with left:
        data = pd.concat(tables)[["checkpoint", "bin_lower", "bin_upper", "count", "confidence", "accuracy", "gap"]]
        figure(ac.reliability(series), data, "calibration-reliability", "reliability-diagram")
    with right:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("ECE", "MCE", "90 % coverage", "accuracy")})
        st.caption(f"Argmax confidence in {bins} equal-width bins (Guo et al. 2017); marker size ∝ images per bin. "
                   "Coverage: share of labels inside the predicted 90 % central interval (ideal 0.90).")
