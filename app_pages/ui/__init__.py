"""What the pages share, one module per concern (the pages are the files beside this package):

- ``errors``     error boundaries: one sentence per problem, a section's error stays in the section
- ``resources``  the backbone pool (handles that carry their lock) and the compute caches
- ``listing``    the library listing (the folder plus what this session added)
- ``pickers``    choosing checkpoints (active, compare set), a rank window, a face, a dataset split; their session state
  and the URL parameters that name them
- ``links``      the URL of the view now ("Copy link")
- ``sidebar``    the sidebar: the link to this view, library, active checkpoint, loaded backbones
- ``formatting`` small text helpers, the names shown for views and projections, messages
- ``charts``     the app's own plotly figures (the shared ones: ``explorer.analysis.figures``), and showing one
  (toolbar PNG, CSV of its data)
- ``gallery``    image thumbnails of a split's predictions and of a selection in the joint map
- ``sweeps``     sweeps in the app: the Train page's sweep form and live panel, Compare's sweep results
- ``sections``   the sections of the Geometry and Compare pages, one module per page (``sections.geometry``,
  ``sections.compare``), what both "Where it fails" sections show (``sections.slice_tables``), Decide at a
  cut-point on both pages (``sections.decide``) and Compare's model-by-slice matrix and report (``sections.matrix``)
"""
