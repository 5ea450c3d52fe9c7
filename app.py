"""OrdinalCLIP Explorer: the Streamlit app (``streamlit run app.py`` from the repository root).

Pages live in ``app_pages/`` (one file each; each defines a ``<name>_page()`` function and runs it
inside an error boundary). This file draws the page's title before importing anything heavy, so that
a page opened from a link shows at once where it is. The app is a thin layer over the ``explorer`` package.

Environment: ``ORDINAL_EXPLORER_CHECKPOINTS`` (library folder, default ``checkpoints/``),
``ORDINAL_EXPLORER_CACHE`` (derived files, default ``.cache/``), ``ORDINAL_EXPLORER_DEVICE``
(e.g. ``cpu``; default CUDA when available). The URL holds the view: ``?checkpoint=<name>`` picks
the active checkpoint, ``?checkpoints=<name>&...`` the compare set, and the pages' choices are widgets
bound to the URL; the sidebar's "Copy link" shows it (docs/app.md, "Shared links").
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="OrdinalCLIP Explorer", page_icon=":material/stacked_line_chart:", layout="wide")

PAGES_DIR = ROOT / "app_pages"

# Each entry: (file in app_pages/, title, icon). Train: app_pages/train.py defines train_page().
PAGES = [
    ("library.py", "Library", ":material/folder_open:"),
    ("geometry.py", "Geometry", ":material/grid_on:"),
    ("lab.py", "Interpolation lab", ":material/science:"),
    ("compare.py", "Compare", ":material/compare:"),
    ("predict.py", "Predict", ":material/photo_camera:"),
    ("train.py", "Train", ":material/model_training:"),
    ("models.py", "Models", ":material/download:"),
]


def main() -> None:
    pages = [st.Page(PAGES_DIR / file, title=title, icon=icon, default=(i == 0)) for i, (file, title, icon) in enumerate(PAGES)]
    page = st.navigation(pages)
    st.title(page.title)  # the page's title first: a shared link shows where it leads before anything loads
    # What a run says before its page (loading, the listing's progress, a link's unknown names) goes in one
    # container that every run draws: were it drawn in one run and not the next, every element below would
    # move, and the browser then drops the URL binding of the page's widgets (a click no longer reaches the link).
    notices = st.container()
    loading = notices.empty()
    if "app_pages.ui.resources" not in sys.modules:  # the first run of this server: imports take seconds
        loading.caption("Loading the page: the first visit after the server started imports the explorer and reads the checkpoint…")
    from app_pages.ui import errors, listing, pickers  # after the title (the library listing)

    st.sidebar.markdown("### OrdinalCLIP Explorer")
    side = st.sidebar.container()
    entries: list = []
    listing.begin_run(notices.empty())
    try:
        entries = listing.library_entries()
        with notices:
            pickers.apply_query_checkpoints(entries)
    except Exception as exc:  # the library listing itself must not take the app down
        with notices:
            errors.report_exception(exc, "the library listing")
    try:
        page.run()
    finally:
        loading.empty()
    try:  # after the page: the sidebar then shows the backbone the page loaded and the active checkpoint it chose
        from app_pages.ui import sidebar  # (the backbone pool: imported once the page is drawn)

        sidebar.sidebar(listing.library_entries() if entries else entries, side)
    except Exception as exc:
        with side:
            errors.report_exception(exc, "the sidebar")


main()
