"""Interpolation lab: recompute a rank learner's prototypes under another interpolation scheme
or another number of base ranks, without retraining.

A trained OrdinalCLIP rank learner holds B base embeddings b_1..b_B (each t x D) and builds rank
r's embedding as ``rank_r = sum_k W[r, k] b_k`` (see :func:`explorer.methods.ordinalclip.interpolation_weights`).

- Same B, another scheme (linear / inv_prop / normal with a bandwidth): the learned bases are kept
  and only W changes.
- Another B' (the lab's extension): new bases are derived from the learner's *current* rank
  embeddings (under its trained scheme) by sampling them at the new base positions
  ``c'_k = linspace(0, R-1, B')`` (B' = 1: the middle rank), interpolating linearly between the
  two neighbouring integer ranks floor(c'_k) and ceil(c'_k). Those B' bases are then
  re-interpolated with the chosen scheme. With inv_prop (one-hot at the base positions) and
  integer base positions this reproduces the current rank embeddings at those ranks exactly.

Either way the prompts (same context vectors, same special tokens) go through the backbone's
frozen text encoder again, so recomputing needs a *full* checkpoint and its backbone. Nothing is
mutated: the learner, its buffers and the encoder are only read.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from explorer.backbones.text_encoder import assemble_prompts
from explorer.core.errors import ExplorerError
from explorer.methods.ordinalclip import INTERPOLATIONS, base_positions, interpolation_weights
from explorer.methods.prompt import PromptModel


@dataclass
class LabVariant:
    """Prototypes recomputed under one (scheme, bandwidth, number of base ranks)."""

    scheme: str
    bandwidth: float
    num_base_ranks: int
    resampled: bool  # True when the bases were derived for a new B' (not the learned ones)
    weights: np.ndarray  # R x B' interpolation weights
    positions: np.ndarray  # B' base positions (rank indices, may be fractional)
    prototypes: np.ndarray  # R x E, L2-normalised

    @property
    def label(self) -> str:
        """Short name, e.g. 'normal (bw 2) B=5'."""
        scheme = f"normal (bw {self.bandwidth:g})" if self.scheme == "normal" else self.scheme
        return f"{scheme} B={self.num_base_ranks}" + (" (resampled)" if self.resampled else "")


def require_rank_learner(model: PromptModel, name: str = "This checkpoint") -> None:
    """Raise a one-sentence ExplorerError unless ``model``'s method has interpolated ranks (``supports_lab``)."""
    if not getattr(model, "supports_lab", False):
        raise ExplorerError(
            f"{name} is a {getattr(model, 'title', type(model).__name__)} learner; the interpolation lab needs a "
            "rank-learner (OrdinalCLIP) checkpoint, whose ranks are interpolated from base ranks."
        )


def resample_base_embeddings(rank_embeddings: torch.Tensor, num_base_ranks: int) -> torch.Tensor:
    """B' x t x D bases sampled from R x t x D rank embeddings at c'_k = linspace(0, R-1, B'),
    linearly interpolating between the neighbouring integer ranks."""
    num_ranks = int(rank_embeddings.shape[0])
    if not 1 <= int(num_base_ranks) <= num_ranks:
        raise ExplorerError(f"The number of base ranks must be between 1 and {num_ranks} (got {num_base_ranks}).")
    pos = base_positions(num_ranks, int(num_base_ranks)).to(torch.float64)
    lo = pos.floor().long().clamp(0, num_ranks - 1)
    hi = pos.ceil().long().clamp(0, num_ranks - 1)
    frac = (pos - lo.to(torch.float64)).to(rank_embeddings.dtype).to(rank_embeddings.device)[:, None, None]
    idx_lo, idx_hi = lo.to(rank_embeddings.device), hi.to(rank_embeddings.device)
    return (1 - frac) * rank_embeddings[idx_lo] + frac * rank_embeddings[idx_hi]


@torch.no_grad()
def recompute(model: PromptModel, scheme: str, bandwidth: float = 1.0, num_base_ranks: int | None = None,
              lock: Any = None) -> LabVariant:
    """Prototypes of ``model`` under ``scheme`` (and ``bandwidth`` for normal) with ``num_base_ranks``
    bases (None: the learned B). Holds ``lock`` (if given) while the text encoder runs."""
    require_rank_learner(model)
    if scheme not in INTERPOLATIONS:
        raise ExplorerError(f"Unknown interpolation '{scheme}'; choose one of {', '.join(INTERPOLATIONS)}.")
    bandwidth = float(bandwidth)
    if scheme == "normal" and not (np.isfinite(bandwidth) and bandwidth > 0):
        raise ExplorerError(f"The normal interpolation bandwidth must be a positive number (got {bandwidth}).")
    learner = model.learner
    config = learner.config
    num_ranks = int(config.num_ranks)
    learned_b = int(learner.rank_embeds.shape[0])
    new_b = learned_b if num_base_ranks is None else int(num_base_ranks)
    if not 1 <= new_b <= num_ranks:
        raise ExplorerError(f"The number of base ranks must be between 1 and {num_ranks} (got {new_b}).")
    with lock if lock is not None else contextlib.nullcontext():
        if new_b == learned_b:
            bases, resampled = learner.rank_embeds.detach(), False
        else:
            bases, resampled = resample_base_embeddings(learner.rank_embeddings().detach(), new_b), True
        weights = interpolation_weights(num_ranks, new_b, scheme, bandwidth if scheme == "normal" else 1.0)
        ranks = torch.einsum("rk,ktd->rtd", weights.to(bases.device, bases.dtype), bases)
        prompts = assemble_prompts(
            learner.context().detach(), ranks, learner.rank_token_counts(), learner.special_embeddings(),
            config.position, shared_context=learner.context_embeds.dim() == 2,
        )
        protos = F.normalize(model.encoder(prompts).float(), dim=-1).cpu().numpy().astype(np.float64)
    return LabVariant(
        scheme=scheme,
        bandwidth=bandwidth if scheme == "normal" else 1.0,
        num_base_ranks=new_b,
        resampled=resampled,
        weights=weights.numpy().astype(np.float64),
        positions=base_positions(num_ranks, new_b).numpy(),
        prototypes=protos,
    )


def recompute_many(model: PromptModel, settings: Iterable[tuple[str, float, int | None]], lock: Any = None) -> list[LabVariant]:
    """:func:`recompute` for each ``(scheme, bandwidth, num_base_ranks)``."""
    return [recompute(model, scheme, bw, b, lock=lock) for scheme, bw, b in settings]


def weights_frame(weights: np.ndarray, rank_labels: list[str] | None = None):
    """Long-form pandas DataFrame (rank, label, base, weight) of an R x B weight matrix, for plotting."""
    import pandas as pd

    weights = np.asarray(weights)
    num_ranks, num_bases = weights.shape
    labels = rank_labels or [str(r) for r in range(num_ranks)]
    return pd.DataFrame({
        "rank": np.repeat(np.arange(num_ranks), num_bases),
        "label": np.repeat(np.asarray(labels, dtype=object), num_bases),
        "base": np.tile([f"b{k + 1}" for k in range(num_bases)], num_ranks),
        "weight": weights.reshape(-1),
    })
