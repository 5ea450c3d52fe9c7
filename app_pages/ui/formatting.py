"""Small text helpers, the names the pages show for similarity views, projections and metrics, and
the messages several pages show."""

from __future__ import annotations

import streamlit as st

from explorer.core import settings

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"]
DEMO_WARNING = "The demo backbone is in use: a tiny random CLIP for demos and tests; its predictions on real photos are not meaningful."
VIEWS = {"cosine": "Cosine", "max_normalised": "Max-normalised", "softmax": "Softmax"}  # similarity views: picker labels
VIEW_TITLES = {"cosine": "cosine similarity", "max_normalised": "row / row max", "softmax": "row softmax (× logit scale)"}
PROJECTIONS = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE"}  # explorer.analysis.projections methods
METRIC_TITLES = {"mae_exp": "test MAE (expected rank)", "acc_max": "test accuracy (argmax)"}


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def no_checkpoints_message() -> None:
    st.info(
        f"No usable checkpoint yet. Put explorer checkpoints (.safetensors) in `{settings.library_folder()}` "
        f"(or set {settings.ENV_FOLDER}), or add one on the Library page."
    )
