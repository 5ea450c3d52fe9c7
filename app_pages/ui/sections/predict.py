"""The Predict page below its checkpoint picker: upload images, crop the face (the largest, or the one
picked), show the distribution over ranks and its summaries."""

from __future__ import annotations

import streamlit as st

from app_pages.ui import charts, formatting, pickers, resources
from explorer.core.fsio import bytes_digest
from explorer.data import faces
from explorer.data.inputs import DEFAULT_MARGIN, checkpoint_inputs, crops_faces
from explorer.predict.uploads import UploadPrediction, predict_uploads, prepare_uploads


@st.cache_resource(show_spinner=False, max_entries=8)
def _predict(content_hash: str, backbone_id: str, digests: tuple[str, ...], names: tuple[str, ...], whole: bool,
             margin: float, choices: tuple[tuple[int, int], ...], _uploads, _predictor, _handle) -> UploadPrediction:
    items = prepare_uploads(_uploads, use_whole_image=whole, margin=margin, face_choices=dict(choices))
    with _handle.use() as backbone:  # decoding and face detection above need no backbone
        return predict_uploads(items, _predictor, backbone)


def predict_bytes(entry, uploads: list[tuple[str, bytes]], whole: bool = False, margin: float = DEFAULT_MARGIN,
                  face_choices: dict[str, int] | None = None) -> UploadPrediction:
    """The upload handling, from (name, bytes) pairs: what the page shows (cached by content).

    ``face_choices``: upload digest -> which face to use (largest first); others use the largest.
    """
    ckpt = resources.load_checkpoint(entry)
    handle = resources.backbone_for(entry, image_only=True)
    digests = tuple(bytes_digest(data) for _, data in uploads)
    names = tuple(name for name, _ in uploads)
    picked = face_choices or {}
    choices = tuple((pos, picked[d]) for pos, d in enumerate(digests) if d in picked)
    return _predict(entry.content_hash, handle.backbone_id, digests, names, bool(whole), float(margin), choices,
                    uploads, ckpt.predictor(), handle)


def _default_face_settings(entry, ckpt) -> None:
    """Face checkpoints crop faces by default (at a --faces run's own margin), others use whole images;
    reset when the checkpoint changes."""
    if st.session_state.get("predict-whole-for") != entry.content_hash:
        st.session_state["predict-whole-for"] = entry.content_hash
        st.session_state["predict-whole"] = not crops_faces(ckpt.meta)
        st.session_state["predict-margin"] = float(checkpoint_inputs(ckpt.meta).get("margin") or DEFAULT_MARGIN)


def predict_body(entry, ckpt) -> None:
    """The upload field and its settings, then each upload's prediction (a table for several)."""
    ranks = ckpt.ranks
    c1, c2, c3 = st.columns([3, 1, 1])
    uploaded = c1.file_uploader("Images (PNG, JPEG, WebP, BMP, TIFF)", type=formatting.IMAGE_TYPES, accept_multiple_files=True,
                                key="predict-images")
    _default_face_settings(entry, ckpt)
    whole = c2.toggle("Whole image", key="predict-whole",
                      help="Off: the largest face found by the face detector is cropped (with a margin; pick another "
                           "face when there are several); when no face is found the whole image is used anyway. "
                           "On by default for checkpoints trained on whole images, off for face checkpoints.")
    margin = c3.slider("Face margin", 0.0, 1.0, step=0.05, key="predict-margin", disabled=whole,
                       help="Extra space around the face, as a fraction of its size on every side.")
    if not uploaded:
        st.caption(f"Upload one or many images; {entry.name} predicts {len(ranks)} ranks "
                   f"({ranks.labels[0]} to {ranks.labels[-1]}{(' ' + ranks.unit) if ranks.unit else ''}).")
        return
    uploads = [(f.name, f.getvalue()) for f in uploaded]
    result = predict_bytes(entry, uploads, whole, margin, pickers.face_choices("predict"))
    for name, message in result.errors:
        st.error(message if name in message else f"{name}: {message}")
    good = [pos for pos, it in enumerate(result.items) if it.ok]
    if not good:
        return
    if len(result.items) > 1:
        table = result.table()
        st.dataframe(table, hide_index=True, width="stretch")
        st.download_button("Download CSV", result.csv(), file_name=f"predictions-{entry.name}.csv", mime="text/csv",
                           key="predict-csv", icon=":material/download:")
        pos = st.selectbox("Show image", good, format_func=lambda p: result.items[p].name, key="predict-show")
    else:
        pos = good[0]
    _show_one(result, pos, result.prediction.ranks, bytes_digest(uploads[pos][1]))



def _show_one(result: UploadPrediction, pos: int, ranks, digest: str) -> None:
    item = result.items[pos]
    rec = result.record(pos)
    left, right = st.columns([1, 2])
    with left:
        st.image(faces.annotate(item.image, item.crop, max_side=420), caption=item.name, output_format="JPEG")
        if item.crop.num_faces > 1:
            pickers.face_picker(item.crop, digest, "predict")
        (st.info if item.crop.found or item.crop.whole_image_requested else st.warning)(item.crop.note)
        if item.crop.found:
            st.image(item.crop.image.resize((112, 112)), caption="What the model sees", width=112, output_format="JPEG")
    with right:
        unit = ranks.unit
        lo, hi = rec["interval_values"]
        in_unit = f" ({unit})" if unit else ""
        m1, m2, m3, m4 = st.columns(4)
        m1.metric(f"{rec['estimate'].capitalize()} value{in_unit}", f"{rec['value']:.1f}")
        m2.metric(f"Most probable{in_unit}", rec["argmax_label"])
        m3.metric(f"Median{in_unit}", f"{rec['median_value']:g}")
        m4.metric(f"{rec['coverage'] * 100:.0f} % interval{in_unit}", f"{lo:g} – {hi:g}")
        charts.chart(charts.distribution(result.probs(pos), ranks.labels, ranks.values, rec, unit=unit), "predict-distribution",
                     f"{item.name}-distribution")
        top = ", ".join(f"{t['label']} ({t['prob'] * 100:.1f} %)" for t in rec["top"])
        st.caption(f"Top {ranks.name or 'rank'}s: {top}.")
