"""Predict: upload images, crop the face (the largest, or the one picked), show the distribution over
ranks and its summaries."""

from __future__ import annotations

from app_pages.ui import errors, pickers


def predict_page() -> None:
    picked = pickers.page_checkpoint("predict-checkpoint")
    if picked is None:
        return
    # the upload handling (torch, the face detector) is imported once the picker is drawn: a link shows its controls first
    from app_pages.ui.sections.predict import predict_body

    predict_body(*picked)


if __name__ == "__main__":
    errors.run_page(predict_page)
