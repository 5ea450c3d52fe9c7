"""Train: placeholder until the trainer API is wired into the app.

Drop the real page in by replacing ``train_page()`` below (keep its name: app.py registers this
file, and the guard at the bottom runs the function inside the shared error boundary).
"""

from __future__ import annotations

import streamlit as st

from app_pages import common
from explorer import library as lib


def train_page() -> None:
    st.title("Train")
    st.info("Training from the app is not wired up yet. Train from the command line meanwhile; the checkpoint it "
            f"writes into `{lib.library_folder()}` appears on the Library page.")
    st.code("ordinal-explorer train --help", language="bash")


if __name__ == "__main__":
    common.run_page(train_page)
