"""A reference run's prompt-learner settings (``runner_cfg.model_cfg.prompt_learner_cfg``, plus
overrides) mapped to the config of the explorer's OrdinalCLIP or CoOp method, checked against the checkpoint's tensors.

The tensor shapes are the truth: a setting that contradicts them is refused, except the ones the
reference itself overrides (``num_context_tokens`` when ``init_context`` is set, the tokens per
rank when ``init_rank_path`` is set).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from explorer.core.errors import ExplorerError
from explorer.core.ranks import read_names_file
from explorer.methods import canonical_name, make_config
from explorer.methods.coop import CoOpConfig
from explorer.methods.ordinalclip import INTERPOLATIONS, OrdinalCLIPConfig
from explorer.methods.prompt import POSITIONS
from explorer.store.reference.config import checked_setting

LEARNER_TYPES = {"RankPromptLearner": "ordinalclip", "PlainPromptLearner": "coop"}  # the reference's learners -> methods
# What import-reference --method takes (the old names rank and plain still work, with a DeprecationWarning).
METHOD_CHOICES = ("ordinalclip", "coop", "numclip", "rank", "plain")
LEARNER_FIELDS = {f.name for cls in (OrdinalCLIPConfig, CoOpConfig) for f in fields(cls)}


# --- learner settings -----------------------------------------------------------------------------


@dataclass
class _Sources:
    """Where learner settings come from: overrides (learner config field names) over the prompt_learner_cfg."""

    cfg: dict[str, Any]
    over: dict[str, Any]
    where: str
    src: str  # how error messages name the settings: the config file or "the learner flags"

    def get(self, field_name: str, cfg_key: str) -> Any:
        """The override ``field_name`` if given, else the config's ``cfg_key`` (always checked for interpolations)."""
        configured = checked_setting(self.cfg, cfg_key, self.where)
        return self.over.get(field_name, configured)


@dataclass(frozen=True)
class _Shapes:
    """What the checkpoint's tensors say: n context tokens, rows of rank_embeds, t tokens per rank."""

    context: tuple[int, ...]
    rank: tuple[int, ...]
    n: int
    rows: int
    t: int
    specific: bool  # rank-specific context (R x n x D)


def method_config_from_reference(
    prompt_cfg: dict[str, Any] | None,
    context: torch.Tensor,
    rank: torch.Tensor,
    overrides: dict[str, Any] | None = None,
    *,
    tokenizer=None,
    search_roots: list[Path] | None = None,
    where: str = "config.yaml",
) -> tuple[OrdinalCLIPConfig | CoOpConfig, list[str]]:
    """The learner config a reference learner corresponds to, and warnings.

    ``prompt_cfg`` is ``runner_cfg.model_cfg.prompt_learner_cfg`` (None for a bare ``.ckpt``);
    ``overrides`` are learner config fields that win over it. ``context`` / ``rank`` are the
    checkpoint's tensors (n x D or R x n x D; B x t x D or R x t x D), whose shapes win over both.
    ``tokenizer`` (CLIP BPE) counts the tokens of ``init_context`` and of the rank names file.
    """
    s = _sources(prompt_cfg, overrides, where)
    shapes = _shapes(context, rank)
    warn: list[str] = []
    method = _method(s)
    num_ranks = _num_ranks(s, method, shapes)
    if method is None:
        method = _infer_method(shapes, num_ranks, warn)
    _check_rank_specific_context(s, shapes)
    num_base_ranks = _num_base_ranks(s, method, shapes, num_ranks)
    context_init = _context_init(s, shapes, tokenizer, warn)
    rank_names, rank_token_counts = _rank_tokens(
        s, method, shapes, num_ranks, num_base_ranks, tokenizer, search_roots or [], warn
    )
    interpolation, position = _interpolation_and_position(s, method, shapes, num_ranks, warn)
    settings = dict(
        num_ranks=num_ranks,
        num_context_tokens=shapes.n,
        context_init=None if context_init is None else str(context_init),
        rank_specific_context=shapes.specific,
        num_tokens_per_rank=shapes.t,
        num_base_ranks=int(num_base_ranks),
        interpolation=interpolation,
        bandwidth=float(s.over.get("bandwidth", 1.0)),
        position=position,
        rank_names=rank_names,
        rank_token_counts=rank_token_counts if rank_names is None else None,
    )
    own = {f.name for f in fields(OrdinalCLIPConfig if method == "ordinalclip" else CoOpConfig)}
    return make_config(method, **{k: v for k, v in settings.items() if k in own}), warn


def _sources(prompt_cfg: dict[str, Any] | None, overrides: dict[str, Any] | None, where: str) -> _Sources:
    over = dict(overrides or {})
    unknown = sorted(set(over) - LEARNER_FIELDS)
    if unknown:
        raise ExplorerError(f"Unknown learner settings {', '.join(unknown)}; use method config field names (method, num_ranks, ...).")
    return _Sources(dict(prompt_cfg or {}), over, where, "the learner flags" if prompt_cfg is None else where)


def _shapes(context: torch.Tensor, rank: torch.Tensor) -> _Shapes:
    if context.dim() not in (2, 3) or rank.dim() != 3:
        raise ExplorerError(
            f"The checkpoint's context_embeds has shape {tuple(context.shape)} and rank_embeds {tuple(rank.shape)}; "
            "expected n x D or R x n x D, and K x t x D."
        )
    if context.shape[-1] != rank.shape[-1]:
        raise ExplorerError(
            f"context_embeds ({context.shape[-1]}) and rank_embeds ({rank.shape[-1]}) have different widths; the checkpoint is inconsistent."
        )
    return _Shapes(
        context=tuple(context.shape), rank=tuple(rank.shape), n=int(context.shape[-2]),
        rows=int(rank.shape[0]), t=int(rank.shape[1]), specific=context.dim() == 3,
    )


def _method(s: _Sources) -> str | None:
    """'ordinalclip' or 'coop' from the overrides or the prompt learner type; None when neither says."""
    method = s.over.get("method")
    if method is None and s.cfg.get("type") is not None:
        typ = str(checked_setting(s.cfg, "type", s.where))
        if typ not in LEARNER_TYPES:
            raise ExplorerError(f"{s.where}: prompt learner type {typ!r} is not supported; only {', '.join(LEARNER_TYPES)} can be imported.")
        method = LEARNER_TYPES[typ]
    method = None if method is None else canonical_name(str(method), warn=True)
    if method is not None and method not in ("ordinalclip", "coop"):
        raise ExplorerError(f"The method {method!r} cannot come from a reference run; it is 'ordinalclip' (RankPromptLearner) "
                            "or 'coop' (PlainPromptLearner).")
    return method


def _num_ranks(s: _Sources, method: str | None, shapes: _Shapes) -> int:
    num_ranks = s.get("num_ranks", "num_ranks")
    if num_ranks is None:
        if shapes.specific:
            num_ranks = shapes.context[0]
        elif method == "coop":
            num_ranks = shapes.rows
        else:
            raise ExplorerError(
                "The number of ranks cannot be read from this checkpoint's tensors (shared context); give num_ranks "
                "(--num-ranks) or the run's config.yaml."
            )
    num_ranks = int(num_ranks)
    if shapes.specific and shapes.context[0] != num_ranks:
        raise ExplorerError(
            f"context_embeds has shape {shapes.context} (rank-specific context for {shapes.context[0]} ranks) "
            f"but {s.src} says num_ranks={num_ranks}."
        )
    return num_ranks


def _infer_method(shapes: _Shapes, num_ranks: int, warn: list[str]) -> str:
    """Bare checkpoint without --method: one rank embedding per rank means CoOp."""
    if shapes.rows == num_ranks:
        method = "coop"
    elif shapes.rows < num_ranks:
        method = "ordinalclip"
    else:
        raise ExplorerError(f"rank_embeds has {shapes.rows} rows, more than the {num_ranks} ranks; num_ranks is wrong.")
    warn.append(f"The method was not given; '{method}' was inferred from rank_embeds {shapes.rank} and {num_ranks} ranks.")
    return method


def _check_rank_specific_context(s: _Sources, shapes: _Shapes) -> None:
    """The tensor decides; a contradicting setting is refused."""
    specific = s.get("rank_specific_context", "rank_specific_context")
    if specific is not None and bool(specific) != shapes.specific:
        raise ExplorerError(
            f"{s.src} says rank_specific_context={bool(specific)} but context_embeds has shape {shapes.context} "
            f"({'one context per rank' if shapes.specific else 'one shared context'})."
        )


def _num_base_ranks(s: _Sources, method: str, shapes: _Shapes, num_ranks: int) -> int:
    num_base_ranks = s.get("num_base_ranks", "num_base_ranks")
    rows = shapes.rows
    if method == "ordinalclip":
        if num_base_ranks is not None and int(num_base_ranks) != rows:
            raise ExplorerError(
                f"rank_embeds has shape {shapes.rank} ({rows} base ranks) but {s.src} says num_base_ranks={num_base_ranks}."
            )
        if rows > num_ranks:
            raise ExplorerError(f"rank_embeds has {rows} base ranks, more than the {num_ranks} ranks.")
        return rows
    if rows != num_ranks:
        raise ExplorerError(
            f"CoOp's rank_embeds has shape {shapes.rank} ({rows} rank embeddings) but there are {num_ranks} ranks."
        )
    if num_base_ranks is not None and 1 <= int(num_base_ranks) <= num_ranks:
        return int(num_base_ranks)
    return min(3, num_ranks)


def _context_init(s: _Sources, shapes: _Shapes, tokenizer, warn: list[str]) -> Any:
    """init_context when it fits the tensor (n is the tensor's; init_context legitimately overrides num_context_tokens)."""
    context_init = s.get("context_init", "init_context")
    configured_n = s.get("num_context_tokens", "num_context_tokens")
    n = shapes.n
    if context_init is not None:
        count = len(tokenizer.encode(str(context_init).replace("_", " "))) if tokenizer is not None else None
        if count is not None and count != n:
            warn.append(
                f"init_context {context_init!r} has {count} tokens but context_embeds has {n}; the tensor wins and the "
                "context text is not recorded in the imported config."
            )
            return None
    elif configured_n is not None and int(configured_n) != n:
        raise ExplorerError(f"context_embeds has {n} context tokens (shape {shapes.context}) but {s.src} says num_context_tokens={configured_n}.")
    return context_init


def _rank_tokens(s, method, shapes, num_ranks, num_base_ranks, tokenizer, roots, warn) -> tuple[list[str] | None, list[int] | None]:
    """Rank names and per-rank token counts (CoOp), checked against rank_embeds."""
    t = shapes.t
    rank_names = s.over.get("rank_names")
    rank_token_counts = s.over.get("rank_token_counts")
    configured_t = s.get("num_tokens_per_rank", "num_tokens_per_rank")
    names_path = checked_setting(s.cfg, "init_rank_path", s.where)
    if rank_names is None and names_path:
        rank_names = _names_from_file(str(names_path), method, num_ranks, num_base_ranks, t, tokenizer, roots, warn)
    if rank_names is not None:
        rank_names = _checked_rank_names(rank_names, method, num_ranks, num_base_ranks, t, tokenizer)
    elif isinstance(configured_t, (list, tuple)):
        counts = [int(c) for c in configured_t]
        if max(counts) != t:
            raise ExplorerError(f"{s.src} gives up to {max(counts)} tokens per rank but rank_embeds has {t} (shape {shapes.rank}).")
        if method == "coop":
            if len(counts) != num_ranks:
                raise ExplorerError(f"{s.src} lists tokens per rank for {len(counts)} ranks but there are {num_ranks}.")
            rank_token_counts = counts
    elif configured_t is not None and int(configured_t) != t and not names_path:
        raise ExplorerError(f"rank_embeds has {t} tokens per rank (shape {shapes.rank}) but {s.src} says num_tokens_per_rank={configured_t}.")
    if rank_token_counts is not None and rank_names is None:
        rank_token_counts = [int(c) for c in rank_token_counts]
        if method == "coop" and (len(rank_token_counts) != num_ranks or max(rank_token_counts) != t or min(rank_token_counts) < 1):
            raise ExplorerError(f"rank_token_counts must give 1..{t} tokens for each of the {num_ranks} ranks.")
    return rank_names, rank_token_counts


def _checked_rank_names(rank_names, method, num_ranks, num_base_ranks, t, tokenizer) -> list[str]:
    rank_names = [str(x) for x in rank_names]
    expected = num_base_ranks if method == "ordinalclip" else num_ranks
    if len(rank_names) != expected:
        raise ExplorerError(f"{len(rank_names)} rank names were given but the {method} method needs {expected}.")
    if tokenizer is not None:
        longest = max(len(tokenizer.encode(x)) for x in rank_names)
        if longest != t:
            raise ExplorerError(f"The longest rank name has {longest} tokens but rank_embeds has {t} tokens per rank.")
    return rank_names


def _interpolation_and_position(s: _Sources, method: str, shapes: _Shapes, num_ranks: int, warn: list[str]) -> tuple[str, str]:
    """Settings the tensors cannot tell: the reference defaults (with a warning) when not given."""
    interpolation = s.get("interpolation", "interpolation_type")
    position = s.get("position", "rank_tokens_position")
    if method == "ordinalclip" and interpolation is None:
        warn.append("The interpolation was not given; the reference default 'linear' was assumed.")
    if position is None:
        warn.append("The rank token position was not given; the reference default 'tail' was assumed.")
    interpolation = str(interpolation or "linear")
    position = str(position or "tail")
    if interpolation not in INTERPOLATIONS:
        raise ExplorerError(f"{s.src}: interpolation {interpolation!r} is unknown; the reference has {', '.join(INTERPOLATIONS)}.")
    if position not in POSITIONS:
        raise ExplorerError(f"{s.src}: rank token position {position!r} is unknown; the reference has {', '.join(POSITIONS)}.")
    if method == "ordinalclip" and interpolation == "normal":
        _warn_normal_nan_rows(num_ranks, shapes.rows, warn)
    return interpolation, position


def _warn_normal_nan_rows(num_ranks: int, num_base_ranks: int, warn: list[str]) -> None:
    """The reference computes exp(-d^2) in float32 and normalises: rows that underflow to 0 give NaN."""
    d = (torch.arange(num_ranks, dtype=torch.float32)[:, None] - _reference_base_positions(num_ranks, num_base_ranks)[None]).abs()
    nan_rows = int((torch.exp(-d * d).sum(dim=1) == 0).sum())
    if nan_rows:
        warn.append(
            f"The reference's 'normal' interpolation gave NaN prototypes for {nan_rows} of {num_ranks} ranks (float32 "
            "underflow far from every base); the imported ones are finite there and equal the reference's elsewhere."
        )


def _reference_base_positions(num_ranks: int, num_base_ranks: int) -> torch.Tensor:
    if num_base_ranks == 1:
        return torch.linspace(0, num_ranks - 1, 3)[1:2]
    return torch.linspace(0, num_ranks - 1, num_base_ranks)


# --- rank names file ------------------------------------------------------------------------------


def resolve_names_file(name: str, search_roots: list[Path]) -> Path | None:
    path = Path(name).expanduser()
    if path.is_absolute():
        return path if path.is_file() else None
    for root in search_roots:
        if (root / path).is_file():
            return root / path
    return None


def _names_from_file(name, method, num_ranks, num_base_ranks, t, tokenizer, roots, warn) -> list[str] | None:
    """Rank names of init_rank_path when the file is found and fits the tensors; otherwise a warning and None."""
    path = resolve_names_file(name, roots)
    plain_note = (
        " Every rank is assumed to use all its rank tokens; if the names had different token counts the prompts differ."
        if method == "coop"
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
    expected = num_base_ranks if method == "ordinalclip" else num_ranks
    if len(names) != expected:
        if method == "ordinalclip" and len(names) == num_ranks:
            warn.append(
                f"The rank names file {path} has {num_ranks} lines (one per rank) but OrdinalCLIP has {num_base_ranks} "
                "base ranks (the reference's known pitfall); it was ignored, since the tensors hold the learned values."
            )
        else:
            warn.append(f"The rank names file {path} has {len(names)} lines but the {method} method needs {expected}; it was ignored.{plain_note}")
        return None
    if tokenizer is not None:
        longest = max(len(tokenizer.encode(x)) for x in names)
        if longest != t:
            warn.append(f"The rank names in {path} have up to {longest} tokens but rank_embeds has {t}; the file was ignored.{plain_note}")
            return None
    return names
