"""The import itself: locate the run's files, check them, write the backbone and the checkpoint."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from explorer.backbones.load import load_backbone
from explorer.backbones.torchfiles import read_weight_file
from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.methods.prompt import build_prompt_model
from explorer.store.reference.checkpoint import (
    find_checkpoint,
    prompt_tensors,
    read_lightning_checkpoint,
    refuse_unsupported_modules,
)
from explorer.store.reference.config import NUMCLIP_MODEL_TYPE, check_clip_image_encoder, model_section, read_run_config
from explorer.store.reference.learner import method_config_from_reference
from explorer.store.reference.numclip import (
    build_numclip_model,
    check_overrides,
    numclip_config,
    numclip_ranks,
    numclip_source,
    numclip_tensors,
)
from explorer.store.reference.weights import combine_backbone_weights, write_backbone_file


class ReferenceImportWarning(UserWarning):
    """Something about a reference run that the import worked around (also stored in the checkpoint)."""


@dataclass
class ImportResult:
    """What an import did: the checkpoint written, the backbone it needs and the warnings."""

    path: Path
    backbone_spec: str
    backbone_file: Path | None
    config: Any  # OrdinalCLIPConfig or CoOpConfig, or NumCLIPConfig for a NumCLIP run
    source: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Backbone:
    """The backbone an import uses: its spec, the combined file written (if any) and what the run tuned."""

    spec: str
    file: Path | None
    changed: dict[str, bool]


def import_reference_run(
    *,
    run_dir: str | Path | None = None,
    ckpt: str | Path | None = None,
    clip_weights: str | Path,
    out: str | Path,
    learner_overrides: dict[str, Any] | None = None,
    ranks: Ranks | None = None,
    concepts: str | None = None,
    rank_start: float | None = None,
    rank_unit: str | None = None,
    device: str = "cpu",
    name: str | None = None,
) -> ImportResult:
    """Import a reference run; see the package docstring. Returns what was written and the warnings.

    NumCLIP runs: ``concepts`` (default ``age``) gives the bins; ``learner_overrides['num_ranks']``,
    ``rank_start`` and ``rank_unit`` (or ``ranks``) give the label ranks."""
    warn: list[str] = []
    out = Path(out).expanduser().resolve()
    clip_path = _clip_weights_path(clip_weights)
    run_dir, ckpt_path = _locate(run_dir, ckpt, warn)
    model_cfg, where = _run_model_cfg(run_dir)
    numclip = _is_numclip(model_cfg, learner_overrides, concepts, where)
    labels = _LabelRanks(ranks, rank_start, rank_unit)

    state, info = read_lightning_checkpoint(ckpt_path)
    refuse_unsupported_modules(state, ckpt_path.name, numclip)
    context, rank = prompt_tensors(state, ckpt_path.name)
    extra = numclip_tensors(state, ckpt_path.name) if numclip else None
    backbone = _write_backbone(clip_path, state, model_cfg, context, out, ckpt_path)
    del state
    try:
        request = _Request(model_cfg, context, rank, learner_overrides, labels, run_dir, where, device)
        if numclip:
            loaded, model, config_warnings, more = _build_numclip(backbone.spec, request, concepts or "age", *extra)
        else:
            (loaded, model, config_warnings), more = _build_learner(backbone.spec, request), {}
        warn.extend(config_warnings)
        source = _source(run_dir, ckpt_path, info, clip_path, model_cfg, backbone.changed, warn)
        source.update(more)
        path = _save(out, model, loaded, name, source)
    except BaseException:
        if backbone.file is not None and backbone.file.exists():
            backbone.file.unlink()
        raise
    return ImportResult(path, backbone.spec, backbone.file, model.config, source, warn)


@dataclass
class _LabelRanks:
    """The label ranks asked for: given outright, or a start and unit for integer ranks (count from the learner)."""

    ranks: Ranks | None
    start: float | None
    unit: str | None


@dataclass
class _Request:
    """What building the learner needs from the run."""

    model_cfg: dict[str, Any] | None
    context: torch.Tensor
    rank: torch.Tensor
    overrides: dict[str, Any] | None
    labels: _LabelRanks
    run_dir: Path | None
    where: str
    device: str


def _is_numclip(model_cfg, overrides, concepts, where: str) -> bool:
    """Whether the run is a NumCLIP one (config type RegCLIPSSR, or --method numclip for a bare .ckpt)."""
    model_type = (model_cfg or {}).get("type")
    method = (overrides or {}).get("method")
    if model_type == NUMCLIP_MODEL_TYPE:
        if method not in (None, "numclip"):
            raise ExplorerError(f"{where} is a {NUMCLIP_MODEL_TYPE} (NumCLIP) run; it cannot be imported as the method {method!r}.")
    elif model_cfg is not None and method == "numclip":
        raise ExplorerError(f"{where} has model type {model_type!r}, not {NUMCLIP_MODEL_TYPE}; --method numclip is for NumCLIP runs.")
    numclip = model_type == NUMCLIP_MODEL_TYPE or method == "numclip"
    if concepts is not None and not numclip:
        raise ExplorerError("Concept bins (--concepts) only apply to NumCLIP (RegCLIPSSR) runs.")
    if numclip:
        check_overrides(overrides)
    return numclip


def _clip_weights_path(clip_weights: str | Path) -> Path:
    clip_path = Path(clip_weights).expanduser().resolve()
    if not clip_path.is_file():
        raise ExplorerError(f"CLIP weights not found: {clip_path}; give the OpenAI-layout file the run started from (e.g. ViT-B-16.pt).")
    return clip_path


def _locate(run_dir: str | Path | None, ckpt: str | Path | None, warn: list[str]) -> tuple[Path | None, Path]:
    """The run folder (None for a bare ``.ckpt`` outside one) and the ``.ckpt`` to import."""
    if run_dir is None and ckpt is None:
        raise ExplorerError("Give the reference run folder (run_dir) or its .ckpt file (ckpt).")
    if run_dir is not None:
        return _locate_in_run_dir(Path(run_dir).expanduser().resolve(), ckpt, warn)
    ckpt_path = Path(ckpt).expanduser().resolve()
    if not ckpt_path.is_file():
        raise ExplorerError(f"Reference checkpoint not found: {ckpt_path}.")
    if ckpt_path.parent.name == "ckpts" and (ckpt_path.parent.parent / "config.yaml").is_file():
        found = ckpt_path.parent.parent
        warn.append(f"Read the learner settings from {found / 'config.yaml'} (the run folder of {ckpt_path.name}).")
        return found, ckpt_path
    return None, ckpt_path


def _locate_in_run_dir(run_dir: Path, ckpt: str | Path | None, warn: list[str]) -> tuple[Path, Path]:
    if not run_dir.is_dir():
        raise ExplorerError(f"The reference run folder {run_dir} does not exist.")
    if not (run_dir / "config.yaml").is_file():
        raise ExplorerError(f"The reference run folder {run_dir} has no config.yaml; give the folder the run wrote (or a .ckpt with learner flags).")
    if ckpt is None:
        ckpt_path, note = find_checkpoint(run_dir)
        if note:
            warn.append(note)
        return run_dir, ckpt_path
    given = Path(ckpt).expanduser()
    candidates = [given] if given.is_absolute() else [given, run_dir / given, run_dir / "ckpts" / given]
    ckpt_path = next((c for c in candidates if c.is_file()), None)
    if ckpt_path is None:
        raise ExplorerError(f"Reference checkpoint {ckpt} not found (looked in the current folder, {run_dir} and {run_dir / 'ckpts'}).")
    return run_dir, ckpt_path.resolve()


def _run_model_cfg(run_dir: Path | None) -> tuple[dict[str, Any] | None, str]:
    """``runner_cfg.model_cfg`` of the run (checked: supported model type, CLIP image encoder) and its file name."""
    if run_dir is None:
        return None, "config.yaml"
    where = str(run_dir / "config.yaml")
    model_cfg = model_section(read_run_config(run_dir / "config.yaml"), where)
    check_clip_image_encoder(model_cfg, where)
    return model_cfg, where


def _write_backbone(clip_path: Path, state, model_cfg, context: torch.Tensor, out: Path, ckpt_path: Path) -> _Backbone:
    """CLIP weights with the run's towers; a combined file beside ``out`` only when something changed."""
    clip_state = read_weight_file(clip_path)
    combined, changed = combine_backbone_weights(clip_state, state, (model_cfg or {}).get("text_encoder_name"))
    del clip_state
    width = combined["token_embedding.weight"].shape[1]
    if context.shape[-1] != width:
        raise ExplorerError(f"context_embeds is {context.shape[-1]} wide but the CLIP weights' token embedding is {width}; give the CLIP weights the run started from.")
    if not any(changed.values()):
        return _Backbone(str(clip_path), None, changed)
    backbone_file = write_backbone_file(combined, out.with_name(f"{out.stem}.backbone.safetensors"), clip_path, ckpt_path)
    return _Backbone(str(backbone_file), backbone_file, changed)


def _search_roots(run_dir: Path | None) -> list[Path]:
    """Where relative names files (init_rank_path) are looked for: the run folder and its parents, then here."""
    return ([run_dir, *run_dir.parents][:6] if run_dir is not None else []) + [Path.cwd()]


def _build_learner(spec, request: _Request):
    """The loaded backbone ``spec``, the explorer prompt model on it with the run's learned tensors, and the config warnings."""
    backbone = load_backbone(spec, device=request.device)
    model_cfg, context, rank = request.model_cfg, request.context, request.rank
    prompt_cfg = model_cfg["prompt_learner_cfg"] if model_cfg is not None else None
    config, config_warnings = method_config_from_reference(
        prompt_cfg, context, rank, request.overrides, tokenizer=backbone.tokenizer,
        search_roots=_search_roots(request.run_dir), where=request.where,
    )
    labels = request.labels
    ranks = labels.ranks
    if ranks is None and (labels.start is not None or labels.unit is not None):
        ranks = Ranks.integers(config.num_ranks, labels.start or 0, unit=labels.unit or "")
    model = build_prompt_model(backbone, config, ranks, seed=None)
    params = dict(model.learner.named_parameters())
    with torch.no_grad():
        for key, tensor in (("context_embeds", context), ("rank_embeds", rank)):
            if tuple(params[key].shape) != tuple(tensor.shape):  # pragma: no cover - guarded by the config checks
                raise ExplorerError(f"The imported {key} has shape {tuple(tensor.shape)} but the learner needs {tuple(params[key].shape)}.")
            params[key].copy_(tensor.to(params[key].device))
    return backbone, model, config_warnings


def _build_numclip(spec, request: _Request, concepts: str, tensors, dropped):
    """Backbone, NumCLIP model with the run's tensors, warnings and the ``source`` additions."""
    backbone = load_backbone(spec, device=request.device)
    prompt_cfg = (request.model_cfg or {}).get("prompt_learner_cfg")
    config, config_warnings = numclip_config(
        prompt_cfg, request.context, request.rank, concepts, request.overrides, tokenizer=backbone.tokenizer,
        search_roots=_search_roots(request.run_dir), where=request.where,
    )
    labels = request.labels
    if labels.ranks is not None:
        ranks, how = labels.ranks, "given"
    else:
        num_ranks = (request.overrides or {}).get("num_ranks")
        ranks, how = numclip_ranks(concepts, config.bin_starts, num_ranks, labels.start, labels.unit)
    model = build_numclip_model(backbone, config, ranks, request.context, request.rank, tensors)
    return backbone, model, config_warnings, numclip_source(concepts, dropped, how)


def _source(run_dir, ckpt_path, info, clip_path, model_cfg, changed, warn) -> dict[str, Any]:
    """The ``source`` metadata of the imported checkpoint."""
    model_cfg = model_cfg or {}
    return {
        "reference_run": str(run_dir) if run_dir is not None else None,
        "ckpt": str(ckpt_path),
        "epoch": info["epoch"],
        "global_step": info["global_step"],
        "pytorch_lightning_version": info["pytorch_lightning_version"],
        "clip_weights": str(clip_path),
        "text_encoder_name": model_cfg.get("text_encoder_name"),
        "image_encoder_name": model_cfg.get("image_encoder_name"),
        "model_type": model_cfg.get("type"),
        "tuned": changed,
        "prompt_learner_cfg": _json_ready(model_cfg.get("prompt_learner_cfg")),
        "warnings": list(warn),
    }


def _save(out: Path, model, backbone, name: str | None, source: dict[str, Any]) -> Path:
    from explorer.store.checkpoints import (
        save_checkpoint,  # checkpoints imports prompts; keep the import local
    )

    return save_checkpoint(out, model, backbone, name=name or out.stem, extra={"source": source})


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def import_reference(**arguments: Any) -> Path:
    """Import a reference OrdinalCLIP run as an explorer checkpoint; returns its path. Takes the
    keyword arguments of :func:`import_reference_run`.

    Warnings (e.g. a rank-names file with R lines for OrdinalCLIP) are issued as
    ``ReferenceImportWarning`` and stored in the checkpoint's ``source.warnings`` metadata;
    ``import_reference_run`` returns them directly.
    """
    result = import_reference_run(**arguments)
    for message in result.warnings:
        warnings.warn(message, ReferenceImportWarning, stacklevel=2)
    return result.path
