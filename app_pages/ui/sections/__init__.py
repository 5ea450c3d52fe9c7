"""The sections of a page (not pages themselves), one module per page: ``geometry`` (nearest words, the
joint map with its gallery, where it fails), ``compare`` (calibration, sweep curves, where they fail),
``slice_tables``, what both "Where it fails" sections show per slice, ``decide`` (Decide at a cut-point,
on both pages) and ``matrix`` (Compare's model-by-slice matrix and the report download). Every figure keeps plotly's
toolbar (PNG download) and has a CSV download of the data behind it (``app_pages.ui.charts.figure``)."""
