"""A reference run's ``config.yaml``: reading it (plain YAML) and checking that it is a run this
import reproduces (model type, prompt learner, CLIP image encoder). Its prompt-learner settings
become the config of the explorer's OrdinalCLIP or CoOp method in :mod:`explorer.store.reference.learner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from explorer.core.errors import ExplorerError

# clip.available_models() of the reference's CLIP package: the only image encoders that are CLIP towers.
CLIP_MODEL_NAMES = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px")
# runner_cfg.model_cfg.type values this import reproduces faithfully (the reference's model class).
NUMCLIP_MODEL_TYPE = "RegCLIPSSR"  # NumCLIP (docs/methods/numclip.md §2)
SUPPORTED_MODEL_TYPES = ("OrdinalCLIP", NUMCLIP_MODEL_TYPE)


# --- config.yaml ----------------------------------------------------------------------------------


def read_run_config(path: str | Path) -> dict[str, Any]:
    """``config.yaml`` of a reference run as plain data (yaml.safe_load: no Python objects are built)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ExplorerError(f"Cannot read the reference config {path}: {exc}.") from exc
    except yaml.YAMLError as exc:
        raise ExplorerError(f"The reference config {path} is not valid YAML ({' '.join(str(exc).split())[:160]}).") from exc
    if not isinstance(data, dict):
        raise ExplorerError(f"The reference config {path} is not a YAML mapping.")
    return data


def model_section(config: dict[str, Any], where: str = "config.yaml") -> dict[str, Any]:
    """``runner_cfg.model_cfg`` of a reference config, checked to be an OrdinalCLIP (or CoOp) or NumCLIP prompt-learner run."""
    model_cfg = (config.get("runner_cfg") or {}).get("model_cfg") if isinstance(config.get("runner_cfg"), dict) else None
    if not isinstance(model_cfg, dict):
        raise ExplorerError(f"{where} has no runner_cfg.model_cfg section; it is not the config of a reference OrdinalCLIP run.")
    model_type = checked_setting(model_cfg, "type", where)
    if not isinstance(model_cfg.get("prompt_learner_cfg"), dict):
        raise ExplorerError(
            f"{where} has no runner_cfg.model_cfg.prompt_learner_cfg (model type {model_type!r}); "
            "only prompt-learner runs (RankPromptLearner / PlainPromptLearner) can be imported."
        )
    if model_type not in SUPPORTED_MODEL_TYPES:
        what = "no runner_cfg.model_cfg.type" if model_type is None else f"model type {model_type!r}"
        raise ExplorerError(
            f"{where} has {what}; only {' / '.join(SUPPORTED_MODEL_TYPES)} runs can be imported, other models are not reproduced."
        )
    learner_type = checked_setting(model_cfg["prompt_learner_cfg"], "type", where)
    if model_type == NUMCLIP_MODEL_TYPE and learner_type not in (None, "PlainPromptLearner"):
        raise ExplorerError(f"{where}: a {NUMCLIP_MODEL_TYPE} run with prompt learner {learner_type!r} is not the reference NumCLIP (PlainPromptLearner).")
    return model_cfg


def check_clip_image_encoder(model_cfg: dict[str, Any], where: str = "config.yaml") -> None:
    """Refuse runs whose image encoder is not the CLIP model's own visual tower (vgg16, resnet50, ...)."""
    text = model_cfg.get("text_encoder_name")
    image = model_cfg.get("image_encoder_name")
    if image is None:
        return
    # The reference builds a torchvision / custom network whenever the two names differ.
    if str(image) not in CLIP_MODEL_NAMES or (text is not None and str(image) != str(text)):
        raise ExplorerError(
            f"{where} uses the image encoder {image!r} (text encoder {text!r}); only CLIP image encoders "
            f"(the visual tower of the same CLIP model: {', '.join(CLIP_MODEL_NAMES)}) are supported."
        )


def checked_setting(cfg: dict[str, Any], key: str, where: str) -> Any:
    """``cfg[key]`` (None when absent), refused when it is an unresolved OmegaConf interpolation."""
    value = cfg.get(key)
    if isinstance(value, str) and value.strip().startswith("${"):
        raise ExplorerError(f"{where}: {key} is an unresolved OmegaConf interpolation ({value}); dump the config with resolve=True.")
    return value
