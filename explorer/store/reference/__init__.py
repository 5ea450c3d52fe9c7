"""Import reference OrdinalCLIP, CoOp and NumCLIP runs (PyTorch Lightning ``.ckpt``) as explorer checkpoints.

A reference run folder holds ``config.yaml`` (an OmegaConf dump, read here as plain YAML) and
``ckpts/*.ckpt``. A checkpoint's ``state_dict`` has ``module.``-prefixed keys:
``module.prompt_learner.{context_embeds, rank_embeds}``, ``module.text_encoder.*`` (CLIP's text
tower without the token embedding), ``module.image_encoder.*`` (the fine-tuned CLIP visual tower)
and ``module.logit_scale``. The token embeddings (SOT, '.', EOT, pad, and any text used to
initialise the context or the rank names) are not in it: they come from the CLIP weights the run
started from (OpenAI layout, e.g. ``ViT-B-16.pt``).

What is imported: runs of the reference model ``OrdinalCLIP`` (``runner_cfg.model_cfg.type``) with
a RankPromptLearner (OrdinalCLIP) or PlainPromptLearner (CoOp), and NumCLIP runs (model type
``RegCLIPSSR`` with a PlainPromptLearner, or a bare ``.ckpt`` with ``learner_overrides={'method':
'numclip'}``; see :mod:`explorer.store.reference.numclip`), all with a CLIP image encoder. Anything else
is refused with one sentence naming it, never approximated: other model types, weights of modules
the model lacks (NumCLIP's ``image_adapter.*`` / ``regressor.*`` in a run imported as OrdinalCLIP),
non-CLIP image encoders.

What an import writes (``out`` = ``<dir>/<stem>.safetensors``):

- ``out``: a full explorer checkpoint (learner tensors + prototypes; metadata ``source`` records
  the run, the ``.ckpt``, its epoch / global step and any warnings);
- ``<dir>/<stem>.backbone.safetensors`` (fp32, OpenAI layout) when the run changed CLIP's weights
  (the reference always fine-tunes the image encoder): the CLIP weights with ``visual.*`` taken
  from ``module.image_encoder.*``, the text tower from ``module.text_encoder.*`` and
  ``logit_scale`` from ``module.logit_scale``. The checkpoint's backbone spec is that file's
  absolute path; when nothing changed it is the CLIP weight file's absolute path instead.

Learner settings come from, in order of precedence: ``learner_overrides`` (learner config field
names), ``config.yaml`` (``runner_cfg.model_cfg.prompt_learner_cfg``), the tensor shapes. The
tensor shapes are the truth: a setting that contradicts them is refused, except the ones the
reference itself overrides (``num_context_tokens`` when ``init_context`` is set, the tokens per
rank when ``init_rank_path`` is set).

Which ``.ckpt`` of a run folder is imported: the only one; else the one whose name contains
``best`` (the most recently modified of those if several); else the most recently modified one.
Pass ``ckpt=`` together with ``run_dir=`` to choose another.

Nothing is ever unpickled with code execution: the ``.ckpt`` is read with
``torch.load(..., weights_only=True)`` and refused when that is not enough.

Modules: ``config`` (config.yaml), ``learner`` (the learner settings), ``checkpoint`` (the ``.ckpt``),
``numclip`` (NumCLIP's adapter, regressor, concepts and label ranks), ``weights`` (the combined
backbone), ``run`` (the import).
"""

from explorer.store.reference.checkpoint import (
    CKPT_PREFIX,
    CONTEXT_KEY,
    IMAGE_PREFIX,
    RANK_KEY,
    TEXT_PREFIX,
    find_checkpoint,
    read_lightning_checkpoint,
    refuse_unsupported_modules,
)
from explorer.store.reference.config import (
    CLIP_MODEL_NAMES,
    SUPPORTED_MODEL_TYPES,
    check_clip_image_encoder,
    model_section,
    read_run_config,
)
from explorer.store.reference.learner import LEARNER_TYPES, method_config_from_reference
from explorer.store.reference.run import (
    ImportResult,
    ReferenceImportWarning,
    import_reference,
    import_reference_run,
)
from explorer.store.reference.weights import combine_backbone_weights

__all__ = [
    "CKPT_PREFIX", "CLIP_MODEL_NAMES", "CONTEXT_KEY", "IMAGE_PREFIX", "LEARNER_TYPES", "RANK_KEY",
    "SUPPORTED_MODEL_TYPES", "TEXT_PREFIX", "ImportResult", "ReferenceImportWarning",
    "check_clip_image_encoder", "combine_backbone_weights", "find_checkpoint", "import_reference",
    "import_reference_run", "method_config_from_reference", "model_section", "read_lightning_checkpoint",
    "read_run_config", "refuse_unsupported_modules",
]
