"""OrdinalCLIP Explorer: compute package (backbones -> prompt learners -> prototypes -> geometry/metrics).

Importable without Streamlit. The data flow is visible from the module names:

- ``backbones``   load a CLIP model (demo, open_clip zoo, local file) with a stable id
- ``prompts``     prompt learners (rank / plain / template) and the truncated text encoder
- ``prototypes``  normalised rank prototypes and prediction from image features
- ``geometry``    similarity, ordinality (violation rate), projections
- ``metrics``     MAE, accuracy, CS@k, AMAE/MMAE, QWK, Spearman, Kendall, RPS, seed aggregation
- ``checkpoints`` the one safetensors checkpoint format, prototype-only export
- ``library``     checkpoint folders for the app: every file described (usable or why not), analyses, projection cache
- ``faces``       face detection (YuNet ONNX in OpenCV) and crop, uploaded images -> rank distributions
- ``inputs``      what a checkpoint's inputs are (face crops or whole images) and the default crop
- ``fileformat``  a file's format from its own header (safetensors, torch zip, pickle)
- ``lab``         re-interpolating a rank learner (other scheme / number of base ranks) without retraining
- ``reference``   import of reference OrdinalCLIP (Lightning) runs
- ``cli``         the ``ordinal-explorer`` command
"""

from explorer.core.errors import ExplorerError

__version__ = "0.1.0"
__all__ = ["ExplorerError", "__version__"]
