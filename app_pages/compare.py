"""Compare: 2 to 4 checkpoints side by side (heatmaps, ordinality, metrics, per-rank errors, one image, calibration,
where they fail, decisions at a cut-point), the model-by-slice matrix of up to 12 and the HTML report."""

from __future__ import annotations

import streamlit as st

from app_pages.ui import errors, formatting, listing, pickers


def compare_page() -> None:
    entries = listing.library_entries()
    ok = listing.usable(entries)
    if len(ok) < 2:
        if ok:
            st.info("Comparing needs at least two usable checkpoints; add another on the Library page.")
        else:
            formatting.no_checkpoints_message()
        return
    chosen = pickers.choose_compare(entries, "compare-checkpoints")
    if len(chosen) < 2:
        st.info("Pick 2 to 4 checkpoints.")
        return
    # the figures' modules (plotly, scipy, torch) are imported once the picker is drawn: a link shows its controls first
    from app_pages.ui.sections.side_by_side import side_by_side

    side_by_side(entries, chosen)


if __name__ == "__main__":
    errors.run_page(compare_page)
