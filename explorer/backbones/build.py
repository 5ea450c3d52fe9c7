"""Building a CLIP without a second copy of its weights, whole or its image tower alone.

The model is built on PyTorch's meta device (shapes only: no memory, and no random
initialisation, which takes seconds for a ViT-B) and the tensors read from the weight file are
then *assigned* to it (``load_state_dict(assign=True)``) instead of being copied into a model that
already holds a random set: a load holds one copy of the weights, not two. Safetensors files are
memory-mapped, so tensors that are never used (the text tower of an image-only load) are never
read from disk.

What a state dict does not hold is rebuilt afterwards (:func:`finish`): open_clip's causal text
mask directly; any other buffer by building the model once for real (slow, never the case for
open_clip's ViT CLIPs). A weight the file lacked is one sentence.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.errors import ExplorerError


def image_key(name: str) -> bool:
    """Whether a state-dict entry is part of what image-only prediction needs (image tower, temperature)."""
    return name.startswith("visual.") or name in ("logit_scale", "logit_bias")


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device (this thread only): shapes without memory or initialisation."""
    with torch.device("meta"):
        return build()


def assign_weights(model: nn.Module, state: Mapping[str, torch.Tensor], image_only: bool = False,
                   strict: bool = True):
    """Give ``model`` the tensors of ``state`` as its own (no copy); ``image_only``: those of the image
    tower alone. ``strict``: RuntimeError, as ``load_state_dict`` raises, when keys are missing or
    unexpected (among the kept ones). Returns load_state_dict's (missing, unexpected) keys."""
    kept = {k: v for k, v in state.items() if not image_only or image_key(k)}
    result = nn.Module.load_state_dict(model, kept, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not image_only or image_key(k)]
    if strict and (missing or result.unexpected_keys):
        raise RuntimeError(f"Missing key(s): {', '.join(missing[:8]) or 'none'}; "
                           f"unexpected key(s): {', '.join(result.unexpected_keys[:8]) or 'none'}")
    return result


@contextlib.contextmanager
def assigning(model: nn.Module, image_only: bool = False) -> Iterator[nn.Module]:
    """Within the block ``model.load_state_dict`` assigns (:func:`assign_weights`): for loaders that
    call it themselves, such as ``open_clip.load_checkpoint`` with its format conversions."""
    model.load_state_dict = functools.partial(_assign_loader, model, image_only)
    try:
        yield model
    finally:
        del model.load_state_dict


def _assign_loader(model: nn.Module, image_only: bool, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
                   assign: bool = True):
    return assign_weights(model, state_dict, image_only=image_only, strict=strict)


def causal_mask(size: int) -> torch.Tensor:
    """open_clip's additive causal attention mask (-inf above the diagonal)."""
    return torch.full((size, size), float("-inf")).triu_(1)


def finish(model: nn.Module, build: Callable[[], nn.Module], image_only: bool, what: str) -> nn.Module:
    """The assigned ``model`` ready to use: its causal masks rebuilt, any other buffer still on the meta
    device taken from a real ``build()``; image-only: its :class:`ImageTower`. ExplorerError when a
    weight is still missing (``what`` names the file or spec), or when the text tower is not CLIP's."""
    if getattr(model, "text_pool_type", "argmax") != "argmax" or getattr(model, "attn_mask", None) is None:
        raise ExplorerError(f"Backbone '{what}' does not read text features at the EOT token with a causal mask; "
                            "only CLIP-style text towers are supported.")
    kept: nn.Module = ImageTower(model) if image_only else model
    for module in kept.modules():
        mask = getattr(module, "attn_mask", None)
        if isinstance(mask, torch.Tensor) and mask.is_meta:
            module.attn_mask = causal_mask(mask.shape[-1])
    missing = [name for name, p in kept.named_parameters() if p.is_meta]
    if missing:
        raise ExplorerError(f"{what} lacks weights the architecture needs ({', '.join(missing[:5])}).")
    if any(_meta_attributes(m) for m in kept.modules()):
        real = dict((ImageTower(build()) if image_only else build()).named_modules())
        for name, module in kept.named_modules():
            for attr in _meta_attributes(module):
                setattr(module, attr, getattr(real[name], attr))
    return kept


def _meta_attributes(module: nn.Module) -> list[str]:
    """Names of the buffers and plain tensor attributes of ``module`` itself still on the meta device."""
    names = [name for name, buffer in module.named_buffers(recurse=False) if buffer.is_meta]
    return names + [name for name, value in vars(module).items()
                    if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter) and value.is_meta]


def clip_embed_dim(model: nn.Module) -> int:
    """Size of a CLIP's joint image-text embedding (its text projection's output; on the meta device too)."""
    proj = model.text_projection
    return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])


class ImageTower(nn.Module):
    """What predicting from stored prototypes needs of a CLIP: its image tower and temperature
    (``encode_image`` as CLIP's); built from a CLIP whose text tower may never have been loaded."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.visual = clip.visual
        self.logit_scale = clip.logit_scale
        self.embed_dim = clip_embed_dim(clip)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, image: torch.Tensor) -> Any:
        return self.encode_image(image)


def contiguous_attention_inputs(model: nn.Module) -> nn.Module:
    """Under autocast (a bf16 forward), hand every batch-first ``nn.MultiheadAttention`` of ``model`` its
    input laid out sequence-first in memory (the same values, so the same results). torch transposes a
    batch-first input to sequence-first, and its input projection of that view of a frozen model's weights
    runs as one product per sequence position with the weight expanded, which a bf16 CPU forward copies per
    position (a ViT-B-32 image tower 193 instead of 34 ms/image, 3.5x slower than fp32: benchmarks/README.md);
    of a contiguous input it is one matrix product. Without autocast nothing changes (an fp32 forward takes
    torch's fused attention on the input as it is). Once per model; returns ``model``."""
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) and module.batch_first and not getattr(module, "_layout_hooked", False):
            module.register_forward_pre_hook(_sequence_first_layout)
            module._layout_hooked = True
    return model


def _sequence_first_layout(module: nn.Module, args: tuple) -> tuple | None:
    """(query, key, value, ...) with each argument that is the query replaced by the same values whose
    transpose to sequence-first is contiguous (self-attention stays one tensor); None (unchanged) without autocast."""
    query = args[0] if args else None
    if not isinstance(query, torch.Tensor) or query.dim() != 3 or query.is_nested or not torch.is_autocast_enabled(query.device.type):
        return None
    laid_out = query.transpose(0, 1).contiguous().transpose(0, 1)
    return tuple(laid_out if arg is query else arg for arg in args)
