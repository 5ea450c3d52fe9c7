"""Geometry: similarity heatmaps, ordinality, violations, adjacent similarity and projections of one checkpoint."""

from __future__ import annotations

from importlib import import_module

import streamlit as st

from app_pages.ui import errors, pickers


def geometry_page() -> None:
    picked = pickers.page_checkpoint("geometry-checkpoint")
    if picked is None:
        return
    # The figures' modules (plotly, torch) are imported once the picker is drawn, the sections' once opened:
    # a page opened from a link shows its controls first, then its own figures.
    from app_pages.ui.sections import on_request, prototypes

    entry, ckpt = picked
    prototypes.prototype_figures(entry, ckpt)
    st.caption("The sections below load the backbone or embed a dataset's images; each computes once opened "
               "(the link remembers which are open).")
    sections = "app_pages.ui.sections.geometry"
    on_request([("Nearest words of the learned tokens", "open-decode", lambda: import_module(sections).decode_section(entry, ckpt)),
                ("Images and prototypes in one map", "open-map", lambda: import_module(sections).map_section(entry, ckpt)),
                ("Where it fails", "open-fails", lambda: import_module(sections).failure_section(entry, ckpt)),
                ("Decide at a cut-point", "open-decide", lambda: import_module("app_pages.ui.sections.decide").geometry_decide(entry))])


if __name__ == "__main__":
    errors.run_page(geometry_page)
