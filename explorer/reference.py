"""Import reference OrdinalCLIP runs (PyTorch Lightning ``.ckpt``) as explorer checkpoints.

A reference run folder holds ``config.yaml`` (an OmegaConf dump, read here as plain YAML) and
``ckpts/*.ckpt``. A checkpoint's ``state_dict`` has ``module.``-prefixed keys:
``module.prompt_learner.{context_embeds, rank_embeds}``, ``module.text_encoder.*`` (CLIP's text
tower without the token embedding), ``module.image_encoder.*`` (the fine-tuned CLIP visual tower)
and ``module.logit_scale``. The token embeddings (SOT, '.', EOT, pad, and any text used to
initialise the context or the rank names) are not in it: they come from the CLIP weights the run
started from (OpenAI layout, e.g. ``ViT-B-16.pt``).

What an import writes (``out`` = ``<dir>/<stem>.safetensors``):

- ``out``: a full explorer checkpoint (learner tensors + prototypes; metadata ``source`` records
  the run, the ``.ckpt``, its epoch / global step and any warnings);
- ``<dir>/<stem>.backbone.safetensors`` (fp32, OpenAI layout) when the run changed CLIP's weights
  (the reference always fine-tunes the image encoder): the CLIP weights with ``visual.*`` taken
  from ``module.image_encoder.*``, the text tower from ``module.text_encoder.*`` and
  ``logit_scale`` from ``module.logit_scale``. The checkpoint's backbone spec is that file's
  absolute path; when nothing changed it is the CLIP weight file's absolute path instead.

Learner settings come from, in order of precedence: ``learner_overrides`` (LearnerConfig field
names), ``config.yaml`` (``runner_cfg.model_cfg.prompt_learner_cfg``), the tensor shapes. The
tensor shapes are the truth: a setting that contradicts them is refused, except the ones the
reference itself overrides (``num_context_tokens`` when ``init_context`` is set, the tokens per
rank when ``init_rank_path`` is set).

Which ``.ckpt`` of a run folder is imported: the only one; else the one whose name contains
``best`` (the most recently modified of those if several); else the most recently modified one.
Pass ``ckpt=`` together with ``run_dir=`` to choose another.

Nothing is ever unpickled with code execution: the ``.ckpt`` is read with
``torch.load(..., weights_only=True)`` and refused when that is not enough.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .backbones import load_backbone, read_weight_file
from .errors import ExplorerError
from .prompts import INTERPOLATIONS, POSITIONS, LearnerConfig, build_prompt_model
from .ranks import Ranks, read_names_file

# clip.available_models() of the reference's CLIP package: the only image encoders that are CLIP towers.
CLIP_MODEL_NAMES = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px")
LEARNER_TYPES = {"RankPromptLearner": "rank", "PlainPromptLearner": "plain"}
CKPT_PREFIX = "module."
CONTEXT_KEY = "prompt_learner.context_embeds"
RANK_KEY = "prompt_learner.rank_embeds"
TEXT_PREFIX = "text_encoder."
IMAGE_PREFIX = "image_encoder."
# Non-tensor entries of OpenAI TorchScript files that are not weights.
_CLIP_INFO_KEYS = ("input_resolution", "context_length", "vocab_size")


class ReferenceImportWarning(UserWarning):
    """Something about a reference run that the import worked around (also stored in the checkpoint)."""


@dataclass
class ImportResult:
    """What an import did: the checkpoint written, the backbone it needs and the warnings."""

    path: Path
    backbone_spec: str
    backbone_file: Path | None
    config: LearnerConfig
    source: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


# --- reading a run ------------------------------------------------------------------------------


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
    """``runner_cfg.model_cfg`` of a reference config, checked to be an OrdinalCLIP / CoOp run."""
    model_cfg = (config.get("runner_cfg") or {}).get("model_cfg") if isinstance(config.get("runner_cfg"), dict) else None
    if not isinstance(model_cfg, dict):
        raise ExplorerError(f"{where} has no runner_cfg.model_cfg section; it is not the config of a reference OrdinalCLIP run.")
    if not isinstance(model_cfg.get("prompt_learner_cfg"), dict):
        raise ExplorerError(
            f"{where} has no runner_cfg.model_cfg.prompt_learner_cfg (model type {model_cfg.get('type')!r}); "
            "only prompt-learner runs (RankPromptLearner / PlainPromptLearner) can be imported."
        )
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


def read_lightning_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict (``module.`` prefix removed, fp32) and info (epoch, global_step, version) of a Lightning ``.ckpt``."""
    path = Path(path)
    if not path.is_file():
        raise ExplorerError(f"Reference checkpoint not found: {path}.")
    try:
        # weights_only=True: only tensors and plain containers are rebuilt; pickled code is never run.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ExplorerError(
            f"{path.name} was refused: unpickling it would run code or build arbitrary Python objects, and reference "
            "checkpoints are only read with weights_only=True (if it is genuine, re-save just its 'state_dict' with torch.save)."
        ) from exc
    except Exception as exc:  # truncated / not a torch file
        raise ExplorerError(f"{path.name} is not a readable torch checkpoint ({' '.join(str(exc).split())[:160]}).") from exc
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


def _plain_int(value: Any) -> int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --- learner settings ---------------------------------------------------------------------------


def _setting(cfg: dict[str, Any], key: str, where: str) -> Any:
    value = cfg.get(key)
    if isinstance(value, str) and value.strip().startswith("${"):
        raise ExplorerError(f"{where}: {key} is an unresolved OmegaConf interpolation ({value}); dump the config with resolve=True.")
    return value


def _resolve_names_file(name: str, search_roots: list[Path]) -> Path | None:
    path = Path(name).expanduser()
    if path.is_absolute():
        return path if path.is_file() else None
    for root in search_roots:
        if (root / path).is_file():
            return root / path
    return None


def learner_config_from_reference(
    prompt_cfg: dict[str, Any] | None,
    context: torch.Tensor,
    rank: torch.Tensor,
    overrides: dict[str, Any] | None = None,
    *,
    tokenizer=None,
    search_roots: list[Path] | None = None,
    where: str = "config.yaml",
) -> tuple[LearnerConfig, list[str]]:
    """The LearnerConfig a reference learner corresponds to, and warnings.

    ``prompt_cfg`` is ``runner_cfg.model_cfg.prompt_learner_cfg`` (None for a bare ``.ckpt``);
    ``overrides`` are LearnerConfig fields that win over it. ``context`` / ``rank`` are the
    checkpoint's tensors (n x D or R x n x D; B x t x D or R x t x D), whose shapes win over both.
    ``tokenizer`` (CLIP BPE) counts the tokens of ``init_context`` and of the rank names file.
    """
    cfg = dict(prompt_cfg or {})
    over = dict(overrides or {})
    known = {f.name for f in fields(LearnerConfig)}
    unknown = sorted(set(over) - known)
    if unknown:
        raise ExplorerError(f"Unknown learner settings {', '.join(unknown)}; use LearnerConfig field names (kind, num_ranks, ...).")
    warn: list[str] = []
    bare = prompt_cfg is None
    src = "the learner flags" if bare else where

    if context.dim() not in (2, 3) or rank.dim() != 3:
        raise ExplorerError(
            f"The checkpoint's context_embeds has shape {tuple(context.shape)} and rank_embeds {tuple(rank.shape)}; "
            "expected n x D or R x n x D, and K x t x D."
        )
    if context.shape[-1] != rank.shape[-1]:
        raise ExplorerError(
            f"context_embeds ({context.shape[-1]}) and rank_embeds ({rank.shape[-1]}) have different widths; the checkpoint is inconsistent."
        )
    n, rows, t = int(context.shape[-2]), int(rank.shape[0]), int(rank.shape[1])
    specific_from_tensor = context.dim() == 3

    # kind
    kind = over.get("kind")
    if kind is None and cfg.get("type") is not None:
        typ = str(_setting(cfg, "type", where))
        if typ not in LEARNER_TYPES:
            raise ExplorerError(f"{where}: prompt learner type {typ!r} is not supported; only {', '.join(LEARNER_TYPES)} can be imported.")
        kind = LEARNER_TYPES[typ]
    kind = LEARNER_TYPES.get(str(kind), kind)
    if kind is not None and kind not in ("rank", "plain"):
        raise ExplorerError(f"Learner kind {kind!r} cannot come from a reference run; it is 'rank' (RankPromptLearner) or 'plain' (PlainPromptLearner).")

    # number of ranks
    num_ranks = over.get("num_ranks", _setting(cfg, "num_ranks", where))
    if num_ranks is None:
        if specific_from_tensor:
            num_ranks = int(context.shape[0])
        elif kind == "plain":
            num_ranks = rows
        else:
            raise ExplorerError(
                "The number of ranks cannot be read from this checkpoint's tensors (shared context); give num_ranks "
                "(--num-ranks) or the run's config.yaml."
            )
    num_ranks = int(num_ranks)
    if specific_from_tensor and int(context.shape[0]) != num_ranks:
        raise ExplorerError(
            f"context_embeds has shape {tuple(context.shape)} (rank-specific context for {context.shape[0]} ranks) "
            f"but {src} says num_ranks={num_ranks}."
        )
    if kind is None:  # bare checkpoint without --learner: one rank embedding per rank means CoOp
        if rows == num_ranks:
            kind = "plain"
        elif rows < num_ranks:
            kind = "rank"
        else:
            raise ExplorerError(f"rank_embeds has {rows} rows, more than the {num_ranks} ranks; num_ranks is wrong.")
        warn.append(f"The learner kind was not given; '{kind}' was inferred from rank_embeds {tuple(rank.shape)} and {num_ranks} ranks.")

    # rank-specific context: the tensor decides; a contradicting setting is refused
    specific = over.get("rank_specific_context", _setting(cfg, "rank_specific_context", where))
    if specific is not None and bool(specific) != specific_from_tensor:
        raise ExplorerError(
            f"{src} says rank_specific_context={bool(specific)} but context_embeds has shape {tuple(context.shape)} "
            f"({'one context per rank' if specific_from_tensor else 'one shared context'})."
        )

    # base ranks / rows of rank_embeds
    num_base_ranks = over.get("num_base_ranks", _setting(cfg, "num_base_ranks", where))
    if kind == "rank":
        if num_base_ranks is not None and int(num_base_ranks) != rows:
            raise ExplorerError(
                f"rank_embeds has shape {tuple(rank.shape)} ({rows} base ranks) but {src} says num_base_ranks={num_base_ranks}."
            )
        if rows > num_ranks:
            raise ExplorerError(f"rank_embeds has {rows} base ranks, more than the {num_ranks} ranks.")
        num_base_ranks = rows
    else:
        if rows != num_ranks:
            raise ExplorerError(
                f"The plain learner's rank_embeds has shape {tuple(rank.shape)} ({rows} rank embeddings) but there are {num_ranks} ranks."
            )
        num_base_ranks = int(num_base_ranks) if num_base_ranks is not None and 1 <= int(num_base_ranks) <= num_ranks else min(3, num_ranks)

    # context tokens: n is the tensor's; init_context legitimately overrides num_context_tokens
    context_init = over.get("context_init", _setting(cfg, "init_context", where))
    configured_n = over.get("num_context_tokens", _setting(cfg, "num_context_tokens", where))
    if context_init is not None:
        count = len(tokenizer.encode(str(context_init).replace("_", " "))) if tokenizer is not None else None
        if count is not None and count != n:
            warn.append(
                f"init_context {context_init!r} has {count} tokens but context_embeds has {n}; the tensor wins and the "
                "context text is not recorded in the imported config."
            )
            context_init = None
    elif configured_n is not None and int(configured_n) != n:
        raise ExplorerError(f"context_embeds has {n} context tokens (shape {tuple(context.shape)}) but {src} says num_context_tokens={configured_n}.")

    # tokens per rank and rank names
    rank_names = over.get("rank_names")
    rank_token_counts = over.get("rank_token_counts")
    configured_t = over.get("num_tokens_per_rank", _setting(cfg, "num_tokens_per_rank", where))
    names_path = _setting(cfg, "init_rank_path", where)
    if rank_names is None and names_path:
        rank_names = _names_from_file(str(names_path), kind, num_ranks, num_base_ranks, t, tokenizer, search_roots or [], warn)
    if rank_names is not None:
        rank_names = [str(x) for x in rank_names]
        expected = num_base_ranks if kind == "rank" else num_ranks
        if len(rank_names) != expected:
            raise ExplorerError(f"{len(rank_names)} rank names were given but the {kind} learner needs {expected}.")
        if tokenizer is not None:
            longest = max(len(tokenizer.encode(x)) for x in rank_names)
            if longest != t:
                raise ExplorerError(f"The longest rank name has {longest} tokens but rank_embeds has {t} tokens per rank.")
    elif isinstance(configured_t, (list, tuple)):
        counts = [int(c) for c in configured_t]
        if max(counts) != t:
            raise ExplorerError(f"{src} gives up to {max(counts)} tokens per rank but rank_embeds has {t} (shape {tuple(rank.shape)}).")
        if kind == "plain":
            if len(counts) != num_ranks:
                raise ExplorerError(f"{src} lists tokens per rank for {len(counts)} ranks but there are {num_ranks}.")
            rank_token_counts = counts
    elif configured_t is not None and int(configured_t) != t and not names_path:
        raise ExplorerError(f"rank_embeds has {t} tokens per rank (shape {tuple(rank.shape)}) but {src} says num_tokens_per_rank={configured_t}.")
    if rank_token_counts is not None and rank_names is None:
        rank_token_counts = [int(c) for c in rank_token_counts]
        if kind == "plain" and (len(rank_token_counts) != num_ranks or max(rank_token_counts) != t or min(rank_token_counts) < 1):
            raise ExplorerError(f"rank_token_counts must give 1..{t} tokens for each of the {num_ranks} ranks.")

    # settings the tensors cannot tell
    interpolation = over.get("interpolation", _setting(cfg, "interpolation_type", where))
    position = over.get("position", _setting(cfg, "rank_tokens_position", where))
    if kind == "rank" and interpolation is None:
        warn.append("The interpolation was not given; the reference default 'linear' was assumed.")
    if position is None:
        warn.append("The rank token position was not given; the reference default 'tail' was assumed.")
    interpolation = str(interpolation or "linear")
    position = str(position or "tail")
    if interpolation not in INTERPOLATIONS:
        raise ExplorerError(f"{src}: interpolation {interpolation!r} is unknown; the reference has {', '.join(INTERPOLATIONS)}.")
    if position not in POSITIONS:
        raise ExplorerError(f"{src}: rank token position {position!r} is unknown; the reference has {', '.join(POSITIONS)}.")
    if kind == "rank" and interpolation == "normal":
        # The reference computes exp(-d^2) in float32 and normalises: rows that underflow to 0 give NaN.
        d = (torch.arange(num_ranks, dtype=torch.float32)[:, None] - _reference_base_positions(num_ranks, rows)[None]).abs()
        nan_rows = int((torch.exp(-d * d).sum(dim=1) == 0).sum())
        if nan_rows:
            warn.append(
                f"The reference's 'normal' interpolation gave NaN prototypes for {nan_rows} of {num_ranks} ranks (float32 "
                "underflow far from every base); the imported ones are finite there and equal the reference's elsewhere."
            )

    config = LearnerConfig(
        kind=kind,
        num_ranks=num_ranks,
        num_context_tokens=n,
        context_init=None if context_init is None else str(context_init),
        rank_specific_context=specific_from_tensor,
        num_tokens_per_rank=t,
        num_base_ranks=int(num_base_ranks),
        interpolation=interpolation,
        bandwidth=float(over.get("bandwidth", 1.0)),
        position=position,
        rank_names=rank_names,
        rank_token_counts=rank_token_counts if rank_names is None else None,
    )
    return config, warn


def _reference_base_positions(num_ranks: int, num_base_ranks: int) -> torch.Tensor:
    if num_base_ranks == 1:
        return torch.linspace(0, num_ranks - 1, 3)[1:2]
    return torch.linspace(0, num_ranks - 1, num_base_ranks)


def _names_from_file(name, kind, num_ranks, num_base_ranks, t, tokenizer, roots, warn) -> list[str] | None:
    """Rank names of init_rank_path when the file is found and fits the tensors; otherwise a warning and None."""
    path = _resolve_names_file(name, roots)
    plain_note = (
        " Every rank is assumed to use all its rank tokens; if the names had different token counts the prompts differ."
        if kind == "plain"
        else ""
    )
    if path is None:
        warn.append(f"The rank names file init_rank_path={name!r} was not found; it is not needed since the tensors hold the learned values.{plain_note}")
        return None
    try:
        names = read_names_file(path)
    except ExplorerError as exc:
        warn.append(f"The rank names file {path} could not be used ({exc}).{plain_note}")
        return None
    expected = num_base_ranks if kind == "rank" else num_ranks
    if len(names) != expected:
        if kind == "rank" and len(names) == num_ranks:
            warn.append(
                f"The rank names file {path} has {num_ranks} lines (one per rank) but the rank learner has {num_base_ranks} "
                "base ranks (the reference's known pitfall); it was ignored, since the tensors hold the learned values."
            )
        else:
            warn.append(f"The rank names file {path} has {len(names)} lines but the {kind} learner needs {expected}; it was ignored.{plain_note}")
        return None
    if tokenizer is not None:
        longest = max(len(tokenizer.encode(x)) for x in names)
        if longest != t:
            warn.append(f"The rank names in {path} have up to {longest} tokens but rank_embeds has {t}; the file was ignored.{plain_note}")
            return None
    return names


# --- backbone -----------------------------------------------------------------------------------


def _is_text_key(key: str) -> bool:
    return key.startswith("transformer.") or key.startswith("ln_final.") or key in ("positional_embedding", "text_projection")


def combine_backbone_weights(
    clip_state: dict[str, torch.Tensor], ref_state: dict[str, torch.Tensor], encoder_name: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    """CLIP weights (OpenAI layout) with the run's image tower, text tower and logit scale; and which of them changed."""
    # Drop what is not a weight: OpenAI TorchScript info entries and causal masks (rebuilt by open_clip).
    clip = {
        k: v for k, v in clip_state.items()
        if k not in _CLIP_INFO_KEYS and k != "attn_mask" and not k.endswith(".attn_mask")
    }
    what = f" ({encoder_name})" if encoder_name else ""
    if "token_embedding.weight" not in clip or "text_projection" not in clip or not any(k.startswith("visual.") for k in clip):
        raise ExplorerError("The CLIP weights are not an OpenAI-layout CLIP state dict (token_embedding, text tower, visual.*).")

    image = {k[len(IMAGE_PREFIX):]: v for k, v in ref_state.items() if k.startswith(IMAGE_PREFIX)}
    text = {k[len(TEXT_PREFIX):]: v for k, v in ref_state.items() if k.startswith(TEXT_PREFIX)}
    clip_visual = {k[len("visual."):]: v for k, v in clip.items() if k.startswith("visual.")}
    clip_text = {k: v for k, v in clip.items() if _is_text_key(k)}

    if not image:
        raise ExplorerError("The checkpoint's state_dict has no module.image_encoder.* weights; the fine-tuned image encoder is missing.")
    if set(image) != set(clip_visual):
        if "conv1.weight" not in image:
            raise ExplorerError(
                "The checkpoint's image encoder is not a CLIP visual tower (e.g. vgg16 / resnet from torchvision); "
                "only CLIP image encoders are supported."
            )
        missing, extra = sorted(set(clip_visual) - set(image)), sorted(set(image) - set(clip_visual))
        raise ExplorerError(
            f"The checkpoint's image encoder{what} does not match the CLIP weights' visual tower "
            f"({len(missing)} keys missing, e.g. {missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]}); give the CLIP weights the run started from."
        )
    if not text:
        raise ExplorerError("The checkpoint's state_dict has no module.text_encoder.* weights; the text encoder is missing.")
    token_override = text.pop("token_embedding.weight", None)
    if set(text) != set(clip_text):
        missing, extra = sorted(set(clip_text) - set(text)), sorted(set(text) - set(clip_text))
        raise ExplorerError(
            f"The checkpoint's text encoder{what} does not match the CLIP weights' text tower "
            f"({len(missing)} keys missing, e.g. {missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]}); give the CLIP weights the run started from."
        )
    if "logit_scale" not in ref_state:
        raise ExplorerError("The checkpoint's state_dict has no module.logit_scale.")

    replaced = {f"visual.{k}": v for k, v in image.items()}
    replaced.update(text)
    replaced["logit_scale"] = ref_state["logit_scale"]
    if token_override is not None:
        replaced["token_embedding.weight"] = token_override
    for key, value in replaced.items():
        if tuple(value.shape) != tuple(clip[key].shape):
            raise ExplorerError(
                f"The checkpoint's {key} has shape {tuple(value.shape)} but the CLIP weights have {tuple(clip[key].shape)}; "
                f"give the CLIP weights{what} the run started from."
            )

    def differs(keys) -> bool:
        return any(not torch.equal(replaced[k].float(), clip[k].float()) for k in keys)

    changed = {
        "image_encoder": differs([k for k in replaced if k.startswith("visual.")]),
        "text_encoder": differs([k for k in replaced if _is_text_key(k) or k == "token_embedding.weight"]),
        "logit_scale": differs(["logit_scale"]),
    }
    combined = {k: (v.float() if v.is_floating_point() else v) for k, v in clip.items()}
    combined.update({k: v.float() for k, v in replaced.items()})
    return combined, changed


def _write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; a weight file is as readable as any other
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- import -------------------------------------------------------------------------------------


def import_reference_run(
    *,
    run_dir: str | Path | None = None,
    ckpt: str | Path | None = None,
    clip_weights: str | Path,
    out: str | Path,
    learner_overrides: dict[str, Any] | None = None,
    ranks: Ranks | None = None,
    device: str = "cpu",
    name: str | None = None,
) -> ImportResult:
    """Import a reference run; see the module docstring. Returns what was written and the warnings."""
    warn: list[str] = []
    out = Path(out).expanduser().resolve()
    clip_path = Path(clip_weights).expanduser().resolve()
    if not clip_path.is_file():
        raise ExplorerError(f"CLIP weights not found: {clip_path}; give the OpenAI-layout file the run started from (e.g. ViT-B-16.pt).")
    if run_dir is None and ckpt is None:
        raise ExplorerError("Give the reference run folder (run_dir) or its .ckpt file (ckpt).")

    # Which run folder / checkpoint.
    if run_dir is not None:
        run_dir = Path(run_dir).expanduser().resolve()
        if not run_dir.is_dir():
            raise ExplorerError(f"The reference run folder {run_dir} does not exist.")
        if not (run_dir / "config.yaml").is_file():
            raise ExplorerError(f"The reference run folder {run_dir} has no config.yaml; give the folder the run wrote (or a .ckpt with learner flags).")
        if ckpt is not None:
            given = Path(ckpt).expanduser()
            candidates = [given] if given.is_absolute() else [given, run_dir / given, run_dir / "ckpts" / given]
            ckpt_path = next((c for c in candidates if c.is_file()), None)
            if ckpt_path is None:
                raise ExplorerError(f"Reference checkpoint {ckpt} not found (looked in the current folder, {run_dir} and {run_dir / 'ckpts'}).")
            ckpt_path = ckpt_path.resolve()
        else:
            ckpt_path, note = find_checkpoint(run_dir)
            if note:
                warn.append(note)
    else:
        ckpt_path = Path(ckpt).expanduser().resolve()
        if not ckpt_path.is_file():
            raise ExplorerError(f"Reference checkpoint not found: {ckpt_path}.")
        if ckpt_path.parent.name == "ckpts" and (ckpt_path.parent.parent / "config.yaml").is_file():
            run_dir = ckpt_path.parent.parent
            warn.append(f"Read the learner settings from {run_dir / 'config.yaml'} (the run folder of {ckpt_path.name}).")

    model_cfg = None
    where = "config.yaml"
    if run_dir is not None:
        where = str(run_dir / "config.yaml")
        model_cfg = model_section(read_run_config(run_dir / "config.yaml"), where)
        check_clip_image_encoder(model_cfg, where)

    state, info = read_lightning_checkpoint(ckpt_path)
    missing = [f"module.{k}" for k in (CONTEXT_KEY, RANK_KEY) if k not in state]
    if missing:
        raise ExplorerError(f"{ckpt_path.name} lacks {', '.join(missing)} in its state_dict; it is not a prompt-learner checkpoint.")
    context, rank = state[CONTEXT_KEY].float(), state[RANK_KEY].float()
    for key, tensor in ((CONTEXT_KEY, context), (RANK_KEY, rank)):
        if not torch.isfinite(tensor).all():
            raise ExplorerError(f"{ckpt_path.name}: module.{key} contains NaN/Inf values; the run diverged and cannot be imported.")

    # Backbone: CLIP weights with the run's towers; a combined file only when something changed.
    clip_state = read_weight_file(clip_path)
    encoder_name = (model_cfg or {}).get("text_encoder_name")
    combined, changed = combine_backbone_weights(clip_state, state, encoder_name)
    width = combined["token_embedding.weight"].shape[1]
    if context.shape[-1] != width:
        raise ExplorerError(f"context_embeds is {context.shape[-1]} wide but the CLIP weights' token embedding is {width}; give the CLIP weights the run started from.")
    del clip_state

    backbone_file: Path | None = None
    written = False
    if any(changed.values()):
        backbone_file = out.with_name(f"{out.stem}.backbone.safetensors")
        meta = {
            "format": "openai-clip-state-dict",
            "made_by": "ordinalclip-explorer import-reference",
            "clip_weights": str(clip_path),
            "reference_ckpt": str(ckpt_path),
        }
        _write_safetensors(combined, backbone_file, meta)
        written = True
        spec = str(backbone_file)
    else:
        spec = str(clip_path)
    del combined

    try:
        backbone = load_backbone(spec, device=device)
        search_roots = [Path.cwd()]
        if run_dir is not None:
            search_roots = [run_dir, *run_dir.parents][:6] + search_roots
        prompt_cfg = model_cfg["prompt_learner_cfg"] if model_cfg is not None else None
        config, config_warnings = learner_config_from_reference(
            prompt_cfg, context, rank, learner_overrides, tokenizer=backbone.tokenizer, search_roots=search_roots, where=where
        )
        warn.extend(config_warnings)
        model = build_prompt_model(backbone, config, ranks, seed=None)
        params = dict(model.learner.named_parameters())
        with torch.no_grad():
            for key, tensor in (("context_embeds", context), ("rank_embeds", rank)):
                if tuple(params[key].shape) != tuple(tensor.shape):  # pragma: no cover - guarded by the config checks
                    raise ExplorerError(f"The imported {key} has shape {tuple(tensor.shape)} but the learner needs {tuple(params[key].shape)}.")
                params[key].copy_(tensor.to(params[key].device))
        source = {
            "reference_run": str(run_dir) if run_dir is not None else None,
            "ckpt": str(ckpt_path),
            "epoch": info["epoch"],
            "global_step": info["global_step"],
            "pytorch_lightning_version": info["pytorch_lightning_version"],
            "clip_weights": str(clip_path),
            "text_encoder_name": (model_cfg or {}).get("text_encoder_name"),
            "image_encoder_name": (model_cfg or {}).get("image_encoder_name"),
            "tuned": changed,
            "prompt_learner_cfg": _json_ready(prompt_cfg),
            "warnings": list(warn),
        }
        path = _save(out, model, backbone, name, source)
    except BaseException:
        if written and backbone_file is not None and backbone_file.exists():
            backbone_file.unlink()
        raise
    return ImportResult(path, spec, backbone_file, model.config, source, warn)


def _save(out: Path, model, backbone, name: str | None, source: dict[str, Any]) -> Path:
    from .checkpoints import save_checkpoint  # checkpoints imports prompts; keep the import local

    return save_checkpoint(out, model, backbone, name=name or out.stem, extra={"source": source})


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def import_reference(
    *,
    run_dir: str | Path | None = None,
    ckpt: str | Path | None = None,
    clip_weights: str | Path,
    out: str | Path,
    learner_overrides: dict[str, Any] | None = None,
    ranks: Ranks | None = None,
    device: str = "cpu",
    name: str | None = None,
) -> Path:
    """Import a reference OrdinalCLIP run as an explorer checkpoint at ``out``; returns its path.

    Warnings (e.g. a rank-names file with R lines for a rank learner) are issued as
    ``ReferenceImportWarning`` and stored in the checkpoint's ``source.warnings`` metadata;
    ``import_reference_run`` returns them directly.
    """
    result = import_reference_run(
        run_dir=run_dir, ckpt=ckpt, clip_weights=clip_weights, out=out,
        learner_overrides=learner_overrides, ranks=ranks, device=device, name=name,
    )
    for message in result.warnings:
        warnings.warn(message, ReferenceImportWarning, stacklevel=2)
    return result.path
