"""The sections of a page (not pages themselves), one module per page: ``prototypes`` (Geometry's own
figures: window, heatmaps, ordinality, projections), ``geometry`` (nearest words, the joint map with its
gallery, where it fails), ``predict`` (Predict's uploads and their distributions), ``lab`` (the
interpolation lab's controls and figures), ``side_by_side`` (Compare's own figures, then its sections), ``compare`` (calibration, sweep curves, where they fail),
``slice_tables``, what both "Where it fails" sections show per slice, ``decide`` (Decide at a cut-point,
on both pages) and ``matrix`` (Compare's model-by-slice matrix and the report download). Every figure keeps plotly's
toolbar (PNG download) and has a CSV download of the data behind it (``app_pages.ui.charts.figure``)."""
