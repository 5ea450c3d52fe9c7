"""OrdinalCLIP Explorer: the compute package, importable without Streamlit.

Layers, lowest first; a module imports only from layers below its own (the import-linter contract in
``pyproject.toml``, run by ``make test``):

- ``core``       errors, ranks, typed options, atomic writes and digests, file formats by header, settings
- ``backbones``  CLIP backbones: specs, loading, weight files, the hub, the text encoder, catalogue, pool
- ``data``       datasets, images, faces (YuNet), what a checkpoint's inputs are, the feature cache
- ``predict``    prototypes, distribution summaries, uploaded images to distributions, the torch-free ONNX runtime path
- ``methods``    the prompt methods as plug-ins (OrdinalCLIP, CoOp, zero-shot, linear probe, NumCLIP)
- ``metrics``    pure metric functions: validation, ordinal, calibration, the panel
- ``analysis``   geometry, projections, maps, curves, decoding, the interpolation lab, evaluation
- ``store``      the checkpoint format, resume states, the app's library, ONNX export, reference import
- ``training``   run config, trainer, distributed runs, sweeps, recipes, zero-shot presets, jobs
- ``cli``        the ``ordinal-explorer`` command
"""

from explorer.core.errors import ExplorerError

__version__ = "0.1.0"
__all__ = ["ExplorerError", "__version__"]
