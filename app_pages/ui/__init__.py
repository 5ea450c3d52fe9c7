"""What the pages share, one module per concern (the pages are the files beside this package):

- ``errors``     error boundaries: one sentence per problem, a section's error stays in the section
- ``resources``  the backbone pool (handles that carry their lock) and the compute caches
- ``listing``    the library listing (the folder plus what this session added)
- ``pickers``    choosing checkpoints (active, compare set, rank window, faces) and their session state
- ``sidebar``    the sidebar: library, active checkpoint, loaded backbones
- ``formatting`` small text helpers and messages
- ``sections``   the analysis sections of the Geometry and Compare pages; ``charts``, ``analysis_charts`` their figures
"""
