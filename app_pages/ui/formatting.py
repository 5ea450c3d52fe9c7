"""Small text helpers and the messages several pages show."""

from __future__ import annotations

import streamlit as st

from explorer.core import settings

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"]
DEMO_WARNING = "The demo backbone is in use: a tiny random CLIP for demos and tests; its predictions on real photos are not meaningful."


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def no_checkpoints_message() -> None:
    st.info(
        f"No usable checkpoint yet. Put explorer checkpoints (.safetensors) in `{settings.library_folder()}` "
        f"(or set {settings.ENV_FOLDER}), or add one on the Library page."
    )
