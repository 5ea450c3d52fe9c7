"""Geometry: similarity heatmaps, ordinality, violations, adjacent similarity and projections of one checkpoint."""

from __future__ import annotations

from app_pages.ui import errors, pickers


def geometry_page() -> None:
    picked = pickers.page_checkpoint("geometry-checkpoint")
    if picked is None:
        return
    # The figures' modules (plotly, scipy, torch) are imported once the picker is drawn: a page opened from a
    # link shows its controls first.
    from app_pages.ui.sections import decide, prototypes
    from app_pages.ui.sections import geometry as sections

    entry, ckpt = picked
    prototypes.prototype_figures(entry, ckpt)
    with errors.guard("the nearest-word decoding"):
        sections.decode_section(entry, ckpt)
    with errors.guard("the image and prototype map"):
        sections.map_section(entry, ckpt)
    with errors.guard("where it fails"):
        sections.failure_section(entry, ckpt)
    with errors.guard("the decision at a cut-point"):
        decide.geometry_decide(entry)


if __name__ == "__main__":
    errors.run_page(geometry_page)
