"""Import of reference NumCLIP runs (model type ``RegCLIPSSR``, docs/methods/numclip.md §2-§3).

What is read beyond an OrdinalCLIP run: ``module.image_adapter.fc.{0,2}.weight`` (the adapter,
E -> E/r -> E, no biases) and ``module.regressor.stage1_FC_after_PB.0.*`` /
``module.regressor.stage1_delta_k.0.*`` (the soft-bin regressor's stage 1). The reference SSR
module also holds layers its forward never calls (``stage2_*``, ``stream*``, ``funsion_block_*``,
``stage1_prob.*``, ``stage1_index_offsets.*``); they are dropped and listed in ``source``, which
changes no output. Any other adapter / regressor tensor is refused.

The reference trains on label - 1 (docs/methods/numclip.md §3): the imported checkpoint reports values in label units
(``value_offset`` 1.0) and its bin starts stay in the regressor's (shifted) units. The concept
bins come from ``concepts`` (a preset or a bins file, default ``age``: the reference's bin_list).
The prompts' token counts per concept follow the reference: the names of ``init_rank_path`` when
the file is found; the bin names (with a warning) when it is not, or for a bare ``.ckpt``; all t
tokens of ``rank_embeds`` when the config has no ``init_rank_path``.

Label ranks (values in label units; they only shape evaluation and display): given, else 0..100
years for the ``age`` / ``adience`` concepts, else the integers from the first to the last bin
start in label units (aesthetics / historical: 1..5). The reference config does not name them
(its ``num_ranks`` is the K concepts).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks, read_names_file
from explorer.methods.concepts import ConceptBins, resolve_concepts
from explorer.methods.numclip import NumCLIP, NumCLIPConfig
from explorer.store.reference.learner import method_config_from_reference, resolve_names_file

ADAPTER_KEYS = ("image_adapter.fc.0.weight", "image_adapter.fc.2.weight")
REGRESSOR_KEYS = tuple(f"regressor.{layer}.0.{p}" for layer in ("stage1_FC_after_PB", "stage1_delta_k") for p in ("weight", "bias"))
UNUSED_PREFIXES = ("regressor.stage2_", "regressor.stream", "regressor.funsion_block_", "regressor.stage1_prob.",
                   "regressor.stage1_index_offsets.")
VALUE_OFFSET = 1.0
AGE_PRESETS = ("age", "adience")
_OVERRIDES = ("method", "num_ranks", "position")  # learner flags that mean something for NumCLIP (num_ranks: label ranks)


def numclip_tensors(state: dict[str, torch.Tensor], name: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The adapter and stage-1 regressor tensors (explorer names, fp32) and the unused reference keys dropped."""
    dropped = sorted(k for k in state if k.startswith(UNUSED_PREFIXES))
    used = ADAPTER_KEYS + REGRESSOR_KEYS
    unknown = sorted(k for k in state if k.startswith(("image_adapter.", "regressor.")) and k not in used and k not in dropped)
    if unknown:
        raise ExplorerError(f"{name} has module.{unknown[0]}, which the reference NumCLIP forward does not have; it is refused, not dropped.")
    missing = [k for k in used if k not in state]
    if missing:
        raise ExplorerError(f"{name} lacks module.{missing[0]} in its state_dict; a NumCLIP (RegCLIPSSR) checkpoint needs its image adapter and stage-1 regressor.")
    tensors = {}
    for key in used:
        tensor = state[key].float()
        if not torch.isfinite(tensor).all():
            raise ExplorerError(f"{name}: module.{key} contains NaN/Inf values; the run diverged and cannot be imported.")
        tensors[key.replace("image_adapter.", "adapter.", 1)] = tensor
    return tensors, dropped


def check_overrides(overrides: dict[str, Any] | None) -> None:
    """Refuse learner flags that have no meaning for a NumCLIP run."""
    extra = sorted(set(overrides or {}) - set(_OVERRIDES))
    if extra:
        raise ExplorerError(f"The learner setting {extra[0]} does not apply to a NumCLIP run (its learner is a plain one over the concepts).")


def numclip_config(prompt_cfg, context, rank, concepts: str, overrides, *, tokenizer, search_roots, where) -> tuple[NumCLIPConfig, list[str]]:
    """The NumCLIPConfig of the run's tensors and the concept bins, and the warnings."""
    bins, _context_text = resolve_concepts(concepts)
    bins.validate()
    k = len(bins.starts)
    if context.dim() != 2:
        raise ExplorerError(f"module.prompt_learner.context_embeds has shape {tuple(context.shape)}; NumCLIP's CoOp learner has one shared n x D context.")
    if rank.dim() != 3 or rank.shape[0] != k:
        raise ExplorerError(f"module.prompt_learner.rank_embeds has shape {tuple(rank.shape)} but the {k} concept bins of '{concepts}' need {k} x t x D (--concepts).")
    cfg = dict(prompt_cfg or {})
    if cfg.get("num_ranks") is not None and int(cfg["num_ranks"]) != k:
        raise ExplorerError(f"{where} says num_ranks={cfg['num_ranks']} (concepts) but the concept bins of '{concepts}' are {k}.")
    names_path = cfg.pop("init_rank_path", None)
    if names_path:
        cfg.pop("num_tokens_per_rank", None)  # the reference takes the token counts from the names
    over = {"method": "coop", "num_ranks": k, **({"position": overrides["position"]} if "position" in (overrides or {}) else {})}
    learner, warn = method_config_from_reference(cfg if prompt_cfg is not None else None, context, rank, over,
                                                  tokenizer=tokenizer, search_roots=search_roots, where=where)
    t = int(rank.shape[1])
    counts = None
    if prompt_cfg is not None and not names_path:  # the reference puts all t tokens of every concept in its prompt
        names, counts = list(bins.names), [t] * k
    else:
        names = _concept_names(names_path, bins, t, tokenizer, search_roots, warn)
    config = NumCLIPConfig(concepts=concepts, bin_starts=list(bins.starts), bin_names=names, num_context_tokens=learner.num_context_tokens,
                           context_init=learner.context_init, position=learner.position, adapter=True, prompt_token_counts=counts,
                           value_offset=VALUE_OFFSET)
    return config, warn


def _concept_names(names_path, bins: ConceptBins, t: int, tokenizer, roots, warn: list[str]) -> list[str]:
    """The names the prompts are built from (their token counts matter): the run's names file if found, else the bins'."""
    found = resolve_names_file(str(names_path), roots) if names_path else None
    names = read_names_file(found) if found is not None else list(bins.names)
    if found is None:
        where = f"the names file init_rank_path={names_path!r} was not found" if names_path else "the checkpoint has no config.yaml"
        warn.append(f"The prompts assume the run's concept names were {', '.join(names)} ({where}).")
    elif len(names) != len(bins.names):
        raise ExplorerError(f"The concept names file {found} has {len(names)} lines but there are {len(bins.names)} concept bins.")
    elif names != list(bins.names):
        warn.append(f"The prompts use the run's concept names ({', '.join(names)}); the bin starts come from the concepts given.")
    longest = max(len(tokenizer.encode(n)) for n in names)
    if longest != t:
        raise ExplorerError(
            f"module.prompt_learner.rank_embeds has {t} tokens per concept but the concept names ({', '.join(names)}) have up to "
            f"{longest}; give the run's concept names with --concepts (a bins file)."
        )
    return names


def numclip_ranks(concepts: str, bins_starts: list[float], num_ranks: int | None, start: float | None, unit: str | None) -> tuple[Ranks, str]:
    """Label ranks (the run's label units) and how they were chosen: given, or 0..100 years for age concepts,
    else the integers from the first to the last bin start in label units."""
    age = concepts in AGE_PRESETS
    unit = unit if unit is not None else ("years" if age else "")
    if start is None:
        start = 0.0 if age else bins_starts[0] + VALUE_OFFSET
    if num_ranks is None:
        num_ranks = 101 - int(start) if age else round(bins_starts[-1] - bins_starts[0]) + 1
        how = "default: 0..100 years (age concepts)" if age and start == 0 else "default: the label range of the concept bins"
    else:
        how = "given"
    ranks = Ranks.integers(num_ranks, start, unit=unit)
    return ranks, f"{how}; {len(ranks)} ranks from {ranks.values[0]:g}"


def build_numclip_model(backbone, config: NumCLIPConfig, ranks: Ranks, context, rank, tensors) -> NumCLIP:
    """The explorer NumCLIP model on ``backbone`` holding the run's tensors (shapes checked, tensors named)."""
    dim = backbone.embed_dim
    fc0 = tensors["adapter.fc.0.weight"]
    if fc0.dim() != 2 or fc0.shape[1] != dim or not 0 < fc0.shape[0] <= dim or dim % fc0.shape[0]:
        raise ExplorerError(f"module.image_adapter.fc.0.weight has shape {tuple(fc0.shape)} but an adapter of {dim}-wide image features needs (E/r, {dim}).")
    model = NumCLIP.build(backbone, replace(config, adapter_reduction=dim // int(fc0.shape[0])), ranks, seed=None)
    stored = {"context_embeds": context, "rank_embeds": rank, **tensors}
    for key, param in model.learned_parameters():
        if tuple(param.shape) != tuple(stored[key].shape):
            reference = key.replace("adapter.", "image_adapter.", 1) if key.startswith("adapter.") else key
            reference = f"prompt_learner.{key}" if key in ("context_embeds", "rank_embeds") else reference
            raise ExplorerError(f"module.{reference} has shape {tuple(stored[key].shape)} but the NumCLIP model needs {tuple(param.shape)}.")
    model.load_state_tensors(stored, "The reference checkpoint")
    return model


def numclip_source(concepts: str, dropped: list[str], ranks_how: str) -> dict[str, Any]:
    """What the ``source`` metadata records about a NumCLIP import."""
    return {
        "model_type": "RegCLIPSSR",
        "value_offset": VALUE_OFFSET,
        "value_offset_reason": "the reference trains on label - 1 (docs/methods/numclip.md §3); values are reported in label units",
        "concepts": str(Path(concepts).expanduser().resolve()) if Path(concepts).expanduser().is_file() else concepts,
        "label_ranks": ranks_how,
        "dropped_unused": dropped,
        "dropped_reason": "layers of the reference SSR module that RegCLIPSSR.forward never calls; dropping them changes no output",
    }
