"""The sections of a page (not pages themselves), one module per page: ``prototypes`` (Geometry's own
figures: window, heatmaps, ordinality, projections), ``geometry`` (nearest words, the joint map with its
gallery, where it fails), ``predict`` (Predict's uploads and their distributions), ``lab`` (the
interpolation lab's controls and figures), ``side_by_side`` (Compare's own figures, then its sections), ``compare`` (calibration, sweep curves, where they fail),
``slice_tables``, what both "Where it fails" sections show per slice, ``decide`` (Decide at a cut-point,
on both pages) and ``matrix`` (Compare's model-by-slice matrix and the report download). Every figure keeps plotly's
toolbar (PNG download) and has a CSV download of the data behind it (``app_pages.ui.charts.figure``)."""

from __future__ import annotations

from typing import Callable

import streamlit as st

from app_pages.ui import errors


def on_request(sections: list[tuple[str, str, Callable[[], None]]]) -> None:
    """``(title, key, draw)`` sections that compute on a dataset or a backbone, each drawn only once its
    expander is opened: the open state is in the URL (``?open-map=true``), so a shared link opens the same
    ones again, and a page opened from a link draws its own figures without waiting for them. An error
    inside an open section replaces only that section."""
    for title, key, draw in sections:
        box = st.expander(title, key=key, bind="query-params")
        if box.open:
            with box, errors.guard(f"the section “{title}”"):
                draw()
