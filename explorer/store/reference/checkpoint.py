"""Reading a reference run's Lightning ``.ckpt``: which one, its tensors, and what it holds.

Nothing is ever unpickled with code execution: the file is read with
``torch.load(..., weights_only=True)`` and refused when that is not enough.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from explorer.backbones.torchfiles import load_weights_only
from explorer.core.errors import ExplorerError

CKPT_PREFIX = "module."
CONTEXT_KEY = "prompt_learner.context_embeds"
RANK_KEY = "prompt_learner.rank_embeds"
TEXT_PREFIX = "text_encoder."
IMAGE_PREFIX = "image_encoder."
# The top-level modules of the reference OrdinalCLIP model (ordinalclip/models/ordinalclip.py).
ORDINALCLIP_MODULES = ("prompt_learner", "text_encoder", "image_encoder", "logit_scale")
# Modules of the NumCLIP model (RegCLIPSSR) that OrdinalCLIP lacks.
NUMCLIP_MODULES = ("image_adapter", "regressor")


def find_checkpoint(run_dir: str | Path) -> tuple[Path, str | None]:
    """The ``.ckpt`` of a run folder to import and, when there was a choice, a note saying why this one."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "ckpts"
    found = sorted(p for p in ckpt_dir.glob("*.ckpt") if p.is_file()) if ckpt_dir.is_dir() else []
    if not found:
        raise ExplorerError(f"The reference run {run_dir} has no checkpoint: {ckpt_dir}/*.ckpt is empty or missing.")
    if len(found) == 1:
        return found[0], None
    best = [p for p in found if "best" in p.name.lower()]
    pool = best or found
    chosen = max(pool, key=lambda p: (p.stat().st_mtime, p.name))
    why = "its name contains 'best'" if best else "it is the most recently modified"
    note = (
        f"{len(found)} checkpoints in {ckpt_dir}; imported {chosen.name} because {why} "
        "(pass ckpt= / --ckpt with the run folder to choose another)."
    )
    return chosen, note


def read_lightning_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict (``module.`` prefix removed, fp32) and info (epoch, global_step, version) of a Lightning ``.ckpt``."""
    path = Path(path)
    if not path.is_file():
        raise ExplorerError(f"Reference checkpoint not found: {path}.")
    obj = _load_weights_only(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise ExplorerError(f"{path.name} is not a Lightning checkpoint: it has no top-level 'state_dict'.")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj["state_dict"].items():
        if isinstance(key, str) and key.startswith(CKPT_PREFIX) and isinstance(value, torch.Tensor):
            state[key[len(CKPT_PREFIX):]] = value.detach().to(torch.float32) if value.is_floating_point() else value
    if not state:
        raise ExplorerError(f"{path.name} has no 'module.*' tensors in its state_dict; it is not a reference OrdinalCLIP checkpoint.")
    info = {
        "epoch": _plain_int(obj.get("epoch")),
        "global_step": _plain_int(obj.get("global_step")),
        "pytorch_lightning_version": str(obj["pytorch-lightning_version"]) if "pytorch-lightning_version" in obj else None,
    }
    return state, info


def _load_weights_only(path: Path) -> Any:
    """The Lightning checkpoint object, read by the one torch-file reader (``weights_only=True``)."""
    return load_weights_only(path, what="torch checkpoint",
                             refusal_hint=" (if it is genuine, re-save just its 'state_dict' with torch.save)")


def refuse_unsupported_modules(state: dict[str, torch.Tensor], name: str, numclip: bool = False) -> None:
    """Refuse weights of modules the model lacks (NumCLIP's adapter and regressor unless ``numclip``, anything else)."""
    allowed = ORDINALCLIP_MODULES + (NUMCLIP_MODULES if numclip else ())
    modules = sorted({key.split(".", 1)[0] for key in state} - set(allowed))
    if not modules:
        return
    numclip_modules = [m for m in modules if m in NUMCLIP_MODULES]
    if numclip_modules:
        raise ExplorerError(
            f"{name} has {' and '.join(m + '.*' for m in numclip_modules)} weights (a NumCLIP RegCLIPSSR checkpoint) but is "
            "imported as OrdinalCLIP; give its RegCLIPSSR config.yaml, or --learner numclip for a bare .ckpt."
        )
    what = "NumCLIP" if numclip else "OrdinalCLIP"
    raise ExplorerError(
        f"{name} has weights of modules the {what} model does not have ({', '.join('module.' + m for m in modules)}); "
        f"only {what} checkpoints ({', '.join(allowed)}) can be imported."
    )


def prompt_tensors(state: dict[str, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The checkpoint's ``context_embeds`` and ``rank_embeds`` (fp32), refused when missing or not finite."""
    missing = [f"module.{k}" for k in (CONTEXT_KEY, RANK_KEY) if k not in state]
    if missing:
        raise ExplorerError(f"{name} lacks {', '.join(missing)} in its state_dict; it is not a prompt-learner checkpoint.")
    context, rank = state[CONTEXT_KEY].float(), state[RANK_KEY].float()
    for key, tensor in ((CONTEXT_KEY, context), (RANK_KEY, rank)):
        if not torch.isfinite(tensor).all():
            raise ExplorerError(f"{name}: module.{key} contains NaN/Inf values; the run diverged and cannot be imported.")
    return context, rank


def _plain_int(value: Any) -> int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
