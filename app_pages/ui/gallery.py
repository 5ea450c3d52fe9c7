"""Image galleries of a split's predictions: thumbnails with label, prediction and error (a click shows
the predicted distribution), and the images box- or lasso-selected in the joint map with their metrics."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app_pages.ui import charts
from explorer.analysis.evaluation import score_outputs
from explorer.analysis.slices import worst_first
from explorer.predict.summaries import summarize

GALLERY_COLUMNS = 6
MAX_SHOWN = 48  # thumbnails of a selection (its metrics cover every selected image)
SELECTED_KEY = "map-selected"  # the indices of the images selected in the joint map (set by its selection event)


def gallery(ckpt, sp, indices, key: str, notes: dict[int, str] | None = None) -> None:
    """Thumbnails of the images ``indices`` with label, prediction and error (and ``notes[i]`` where given);
    a click on one shows its predicted distribution below the gallery."""
    indices = [int(i) for i in indices]
    for start in range(0, len(indices), GALLERY_COLUMNS):
        for col, i in zip(st.columns(GALLERY_COLUMNS), indices[start:start + GALLERY_COLUMNS]):
            error = abs(sp.values[i] - ckpt.ranks.value_array[sp.labels[i]])
            with col:
                st.image(sp.image(i), width="stretch")
                st.caption(f"label {ckpt.ranks.labels[sp.labels[i]]} · predicted {sp.values[i]:.1f} · error {error:.1f}"
                           + (f" · {notes[i]}" if notes and i in notes else ""))
                if st.button("Distribution", key=f"{key}-{i}", width="stretch"):
                    st.session_state[f"{key}-open"] = i
    opened = st.session_state.get(f"{key}-open")
    if opened in indices:
        classes = ckpt.classes
        pred = summarize(sp.probs[[opened]], classes)
        charts.chart(charts.distribution(pred.probs[0], classes.labels, classes.values, pred.record(0), unit=classes.unit,
                                         height=280, title=f"{sp.samples[opened].path}: predicted distribution"),
                     f"{key}-distribution")


def remember_selection(event_key: str) -> None:
    """Selection callback of the joint map: keep the selected images' indices (trace 0 holds the images)."""
    event = st.session_state.get(event_key) or {}
    points = (event.get("selection") or {}).get("points") or []
    st.session_state[SELECTED_KEY] = sorted({int(p["point_index"]) for p in points if p.get("curve_number", 0) == 0})


def selection_gallery(ckpt, sp) -> None:
    """The images selected (box or lasso) in the joint map: thumbnails and the region's metric panel."""
    chosen = sorted(i for i in st.session_state.get(SELECTED_KEY) or [] if 0 <= i < len(sp.labels))
    if not chosen:
        st.caption("Box- or lasso-select images in the 2-D map to see them here with the region's metrics.")
        return
    idx = np.array(chosen)
    m = score_outputs(sp.labels[idx], sp.probs[idx], sp.values[idx], sp.targets[idx], ckpt.ranks)
    st.markdown(f"**{len(idx)} selected images** · value MAE {m['mae_value']:.3f} · accuracy (argmax) "
                f"{m['acc_max'] * 100:.1f} % · 1-off {m['cs1'] * 100:.1f} %")
    if len(idx) > MAX_SHOWN:
        st.caption(f"Showing the {MAX_SHOWN} with the largest errors of the {len(idx)} selected.")
        idx = worst_first(sp.outputs(), ckpt.ranks, idx)[:MAX_SHOWN]
    gallery(ckpt, sp, idx, "map-gallery")
