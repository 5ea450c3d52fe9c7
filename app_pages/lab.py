"""Interpolation lab: a method's prototypes under other interpolation schemes / numbers of base ranks
(offered for the checkpoints whose method implements the lab hooks, explorer.methods.hooks)."""

from __future__ import annotations

import streamlit as st

from app_pages.ui import errors, formatting, listing, pickers
from explorer.store import library as lib


def _is_rank_learner(entry: lib.LibraryEntry) -> bool:
    """A full checkpoint of a method that implements the lab hooks (``reinterpolate``, ``lab_options``; read from
    the listing, so a link to the lab draws its picker without importing the methods, hence torch)."""
    return entry.summary.get("content") == "full" and entry.offers("lab")


def lab_page() -> None:
    st.caption(
        "Recompute an OrdinalCLIP checkpoint's prototypes (or those of any method with the lab hooks) under another interpolation scheme or number of base ranks, "
        "without retraining: the learned context and base embeddings go through the backbone's text encoder again. "
        "For another number of base ranks B′ the new bases are the current rank embeddings sampled at "
        "linspace(0, R−1, B′) (linear between neighbouring ranks), then re-interpolated."
    )
    entries = listing.library_entries()
    rank_entries = [e for e in listing.usable(entries) if _is_rank_learner(e)]
    if not rank_entries:
        if listing.usable(entries):
            st.info("The lab needs a full checkpoint of a method with interpolated ranks (OrdinalCLIP) with its backbone; none of the "
                    "checkpoints in the library is one (CoOp, zero-shot and prototype-only checkpoints cannot be re-interpolated).")
        else:
            formatting.no_checkpoints_message()
        return
    active = pickers.active_entry(entries)
    if active is not None and not _is_rank_learner(active):
        st.info(f"The active checkpoint {active.name} is not a full OrdinalCLIP checkpoint; pick one of these.")
    entry = pickers.choose_checkpoint(entries, "lab-checkpoint", label="Rank-learner checkpoint", allowed=_is_rank_learner)
    # the lab's figures (plotly, torch) are imported once the picker is drawn: a link shows its controls first
    from app_pages.ui.sections.lab import lab_body

    lab_body(entry)


if __name__ == "__main__":
    errors.run_page(lab_page)
