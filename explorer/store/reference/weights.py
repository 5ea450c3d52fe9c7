"""The backbone of an imported run: CLIP's weights (OpenAI layout) with the run's own image tower,
text tower and logit scale, written as one fp32 safetensors file when anything changed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from explorer.core.errors import ExplorerError
from explorer.core.fsio import save_safetensors
from explorer.store.reference.checkpoint import IMAGE_PREFIX, TEXT_PREFIX

# Non-tensor entries of OpenAI TorchScript files that are not weights.
_CLIP_INFO_KEYS = ("input_resolution", "context_length", "vocab_size")
_SAME_WEIGHTS_HINT = "give the CLIP weights the run started from"


def _is_text_key(key: str) -> bool:
    return key.startswith(("transformer.", "ln_final.")) or key in ("positional_embedding", "text_projection")


def combine_backbone_weights(
    clip_state: dict[str, torch.Tensor], ref_state: dict[str, torch.Tensor], encoder_name: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    """CLIP weights (OpenAI layout) with the run's image tower, text tower and logit scale; and which of them changed."""
    clip = _clip_weights(clip_state)
    what = f" ({encoder_name})" if encoder_name else ""
    replaced = {f"visual.{k}": v for k, v in _run_image_tower(ref_state, clip, what).items()}
    text, token_override = _run_text_tower(ref_state, clip, what)
    replaced.update(text)
    if "logit_scale" not in ref_state:
        raise ExplorerError("The checkpoint's state_dict has no module.logit_scale.")
    replaced["logit_scale"] = ref_state["logit_scale"]
    if token_override is not None:
        replaced["token_embedding.weight"] = token_override
    _check_shapes(replaced, clip, what)
    changed = _what_changed(replaced, clip)
    combined = {k: (v.float() if v.is_floating_point() else v) for k, v in clip.items()}
    combined.update({k: v.float() for k, v in replaced.items()})
    return combined, changed


def _clip_weights(clip_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The CLIP state dict less what is not a weight (TorchScript info entries, causal masks rebuilt by open_clip)."""
    clip = {
        k: v for k, v in clip_state.items()
        if k not in _CLIP_INFO_KEYS and k != "attn_mask" and not k.endswith(".attn_mask")
    }
    if "token_embedding.weight" not in clip or "text_projection" not in clip or not any(k.startswith("visual.") for k in clip):
        raise ExplorerError("The CLIP weights are not an OpenAI-layout CLIP state dict (token_embedding, text tower, visual.*).")
    return clip


def _mismatch(tower: str, clip_tower: str, what: str, expected: set[str], got: set[str]) -> ExplorerError:
    missing, extra = sorted(expected - got), sorted(got - expected)
    return ExplorerError(
        f"The checkpoint's {tower}{what} does not match the CLIP weights' {clip_tower} tower "
        f"({len(missing)} keys missing, e.g. {missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]}); {_SAME_WEIGHTS_HINT}."
    )


def _run_image_tower(ref_state, clip, what: str) -> dict[str, torch.Tensor]:
    """``module.image_encoder.*``, checked to be the CLIP weights' visual tower (keys without ``visual.``)."""
    image = {k[len(IMAGE_PREFIX):]: v for k, v in ref_state.items() if k.startswith(IMAGE_PREFIX)}
    clip_visual = {k[len("visual."):] for k in clip if k.startswith("visual.")}
    if not image:
        raise ExplorerError("The checkpoint's state_dict has no module.image_encoder.* weights; the fine-tuned image encoder is missing.")
    if set(image) != clip_visual:
        if "conv1.weight" not in image:
            raise ExplorerError(
                "The checkpoint's image encoder is not a CLIP visual tower (e.g. vgg16 / resnet from torchvision); "
                "only CLIP image encoders are supported."
            )
        raise _mismatch("image encoder", "visual", what, clip_visual, set(image))
    return image


def _run_text_tower(ref_state, clip, what: str) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """``module.text_encoder.*`` checked against CLIP's text tower, and its token embedding if it has one."""
    text = {k[len(TEXT_PREFIX):]: v for k, v in ref_state.items() if k.startswith(TEXT_PREFIX)}
    if not text:
        raise ExplorerError("The checkpoint's state_dict has no module.text_encoder.* weights; the text encoder is missing.")
    token_override = text.pop("token_embedding.weight", None)
    clip_text = {k for k in clip if _is_text_key(k)}
    if set(text) != clip_text:
        raise _mismatch("text encoder", "text", what, clip_text, set(text))
    return text, token_override


def _check_shapes(replaced, clip, what: str) -> None:
    for key, value in replaced.items():
        if tuple(value.shape) != tuple(clip[key].shape):
            raise ExplorerError(
                f"The checkpoint's {key} has shape {tuple(value.shape)} but the CLIP weights have {tuple(clip[key].shape)}; "
                f"give the CLIP weights{what} the run started from."
            )


def _what_changed(replaced, clip) -> dict[str, bool]:
    def differs(keys) -> bool:
        return any(not torch.equal(replaced[k].float(), clip[k].float()) for k in keys)

    return {
        "image_encoder": differs([k for k in replaced if k.startswith("visual.")]),
        "text_encoder": differs([k for k in replaced if _is_text_key(k) or k == "token_embedding.weight"]),
        "logit_scale": differs(["logit_scale"]),
    }


def write_backbone_file(combined: dict[str, torch.Tensor], path: Path, clip_path: Path, ckpt_path: Path) -> Path:
    """Write the combined weights (OpenAI layout, fp32) atomically as ``path``; returns it."""
    meta = {
        "format": "openai-clip-state-dict",
        "made_by": "ordinalclip-explorer import-reference",
        "clip_weights": str(clip_path),
        "reference_ckpt": str(ckpt_path),
    }
    return save_safetensors(path, combined, meta)
