"""OrdinalCLIP (NeurIPS 2022): learned context and B base-rank embeddings, interpolated to R ranks.

Rank r's embedding is ``sum_k W[r, k] * base_k`` with interpolation weights W (:func:`interpolation_weights`).
OrdinalCLIP implements both optional hooks (:mod:`explorer.methods.hooks`): decoding (its context,
the interpolated ranks and the bases) and the interpolation lab (:meth:`OrdinalCLIP.reinterpolate`).

The lab, without retraining:

- Same B, another scheme (linear / inv_prop / normal with a bandwidth): the learned bases are kept
  and only W changes.
- Another B' (the lab's extension): new bases are derived from the learner's *current* rank
  embeddings (under its trained scheme) by sampling them at the new base positions
  ``c'_k = linspace(0, R-1, B')`` (B' = 1: the middle rank), interpolating linearly between the
  two neighbouring integer ranks floor(c'_k) and ceil(c'_k) (:func:`resample_base_embeddings`). Those
  B' bases are then re-interpolated with the chosen scheme. With inv_prop (one-hot at the base
  positions) and integer base positions this reproduces the current rank embeddings at those ranks.

Either way the prompts (same context vectors, same special tokens) go through the backbone's frozen
text encoder again. Nothing is mutated: the learner, its buffers and the encoder are only read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from explorer.backbones.text_encoder import assemble_prompts
from explorer.core.errors import ExplorerError
from explorer.core.options import option
from explorer.methods.hooks import LabOptions, LabVariant, LearnedTokens
from explorer.methods.prompt import LearnedPromptModel, PromptConfig, PromptLearner, TokenTools

INTERPOLATIONS = ("linear", "inv_prop", "normal")


@dataclass
class OrdinalCLIPConfig(PromptConfig):
    """OrdinalCLIP's settings: the shared prompt ones plus B base ranks and their interpolation."""

    method: str = option("ordinalclip")
    num_base_ranks: int = option(3, flag="--base-ranks", help="B base ranks of OrdinalCLIP")
    interpolation: str = option("linear", flag="--interpolation", choices=INTERPOLATIONS, help="OrdinalCLIP's interpolation of the base ranks")
    bandwidth: float = option(1.0, flag="--bandwidth", help="bandwidth of the normal interpolation")

    def validate_ranks(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ExplorerError(f"Unknown interpolation '{self.interpolation}'; choose one of {', '.join(INTERPOLATIONS)}.")
        if not 1 <= int(self.num_base_ranks) <= int(self.num_ranks):
            raise ExplorerError(f"num_base_ranks must be between 1 and num_ranks ({self.num_ranks}); got {self.num_base_ranks}.")
        if not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            raise ExplorerError(f"The normal interpolation bandwidth must be a positive number (got {self.bandwidth}).")
        if self.rank_names is not None and len(self.rank_names) != self.num_base_ranks:
            extra = (" (this file names every rank; OrdinalCLIP only learns the base ranks)"
                     if len(self.rank_names) == self.num_ranks else "")
            raise ExplorerError(
                f"OrdinalCLIP needs {self.num_base_ranks} base-rank names, one per base rank, "
                f"but got {len(self.rank_names)}{extra}."
            )


def base_positions(num_ranks: int, num_base_ranks: int) -> torch.Tensor:
    """c_k = linspace(0, R-1, B); for B = 1 the middle rank (R-1)/2."""
    if num_base_ranks == 1:
        return torch.tensor([(num_ranks - 1) / 2.0], dtype=torch.float64)
    return torch.linspace(0, num_ranks - 1, num_base_ranks, dtype=torch.float64)


def interpolation_weights(num_ranks: int, num_base_ranks: int, scheme: str = "linear", bandwidth: float = 1.0) -> torch.Tensor:
    """R x B float32 weights W (rows sum to 1) so that rank_r = sum_k W[r, k] * base_k.

    linear: f = 1 - d/(R-1); inv_prop: f = 1/(d + 1e-5); normal: f = exp(-(d/bandwidth)^2),
    normalised in log space so that it stays finite where the reference's float32 exp underflows.
    """
    if scheme not in INTERPOLATIONS:
        raise ExplorerError(f"Unknown interpolation '{scheme}'; choose one of {', '.join(INTERPOLATIONS)}.")
    if not 1 <= num_base_ranks <= num_ranks or num_ranks < 2:
        raise ExplorerError(f"Need 1 <= num_base_ranks <= num_ranks and num_ranks >= 2 (got B={num_base_ranks}, R={num_ranks}).")
    d = (torch.arange(num_ranks, dtype=torch.float64)[:, None] - base_positions(num_ranks, num_base_ranks)[None]).abs()
    if scheme == "normal":
        w = torch.softmax(-((d / bandwidth) ** 2), dim=1)
    else:
        f = 1.0 - d / (num_ranks - 1) if scheme == "linear" else 1.0 / (d + 1e-5)
        w = f / f.sum(dim=1, keepdim=True)
    return w.to(torch.float32)


class RankPromptLearner(PromptLearner):
    """OrdinalCLIP: B learned base-rank embeddings; rank r = sum_k W[r, k] * base_k."""

    def __init__(self, config: OrdinalCLIPConfig, tools: TokenTools, generator: torch.Generator | None = None):
        super().__init__(config, tools, generator)
        self.rank_embeds = self._rank_parameter(config, tools, config.num_base_ranks, generator)
        self.register_buffer(
            "interpolation",
            interpolation_weights(config.num_ranks, config.num_base_ranks, config.interpolation, config.bandwidth),
            persistent=False,
        )

    def rank_embeddings(self) -> torch.Tensor:
        return torch.einsum("rk,ktd->rtd", self.interpolation, self.rank_embeds)


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


def _check_lab_setting(scheme: str, bandwidth: float, num_base_ranks: int, num_ranks: int) -> None:
    if scheme not in INTERPOLATIONS:
        raise ExplorerError(f"Unknown interpolation '{scheme}'; choose one of {', '.join(INTERPOLATIONS)}.")
    if scheme == "normal" and not (math.isfinite(bandwidth) and bandwidth > 0):
        raise ExplorerError(f"The normal interpolation bandwidth must be a positive number (got {bandwidth}).")
    if not 1 <= num_base_ranks <= num_ranks:
        raise ExplorerError(f"The number of base ranks must be between 1 and {num_ranks} (got {num_base_ranks}).")


class OrdinalCLIP(LearnedPromptModel):
    """Ordered language prototypes from interpolated base-rank embeddings."""

    name = "ordinalclip"
    title = "OrdinalCLIP"
    config_class = OrdinalCLIPConfig
    variant_field = "interpolation"  # sweep --methods ordinalclip:normal
    form_fields = ("num_context_tokens", "num_base_ranks", "interpolation")

    @classmethod
    def make_learner(cls, config: OrdinalCLIPConfig, tools: TokenTools, generator, context_length: int) -> RankPromptLearner:
        return RankPromptLearner(config, tools, generator)

    @classmethod
    def rank_rows(cls, config: OrdinalCLIPConfig) -> int:
        return int(config.num_base_ranks)

    @classmethod
    def summary_fields(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {"interpolation": config.get("interpolation"), "num_base_ranks": config.get("num_base_ranks"),
                **super().summary_fields(config)}

    @classmethod
    def library_note(cls, summary: dict[str, Any]) -> str:
        return f"{summary.get('interpolation')} (B={summary.get('num_base_ranks')})"

    @classmethod
    def learned_tokens(cls, config: OrdinalCLIPConfig, tensors: dict[str, torch.Tensor]) -> LearnedTokens:
        """The context, the stored bases interpolated to every rank, and the bases at their rank positions."""
        bases = tensors["rank_embeds"]
        W = interpolation_weights(config.num_ranks, config.num_base_ranks, config.interpolation, config.bandwidth)
        return LearnedTokens(context=tensors.get("context_embeds"), classes=torch.einsum("rk,ktd->rtd", W, bases),
                             bases=bases, base_positions=base_positions(config.num_ranks, bases.shape[0]).tolist())

    @classmethod
    def lab_options(cls, config: OrdinalCLIPConfig) -> LabOptions:
        return LabOptions(INTERPOLATIONS, config.interpolation, float(config.bandwidth), int(config.num_base_ranks))

    @torch.no_grad()
    def reinterpolate(self, scheme: str, bandwidth: float = 1.0, num_base_ranks: int | None = None) -> LabVariant:
        """Prototypes under ``scheme`` (``bandwidth`` for normal) from ``num_base_ranks`` bases (None: the
        learned B; another B': bases resampled from the current rank embeddings, see the module docstring)."""
        learner, num_ranks = self.learner, int(self.config.num_ranks)
        learned_b = int(learner.rank_embeds.shape[0])
        new_b = learned_b if num_base_ranks is None else int(num_base_ranks)
        bandwidth = float(bandwidth) if scheme == "normal" else 1.0
        _check_lab_setting(scheme, bandwidth, new_b, num_ranks)
        if new_b == learned_b:
            bases = learner.rank_embeds.detach()
        else:
            bases = resample_base_embeddings(learner.rank_embeddings().detach(), new_b)
        weights = interpolation_weights(num_ranks, new_b, scheme, bandwidth)
        ranks = torch.einsum("rk,ktd->rtd", weights.to(bases.device, bases.dtype), bases)
        prompts = assemble_prompts(learner.context().detach(), ranks, learner.rank_token_counts(), learner.special_embeddings(),
                                   self.config.position, shared_context=learner.context_embeds.dim() == 2)
        protos = F.normalize(self.encoder(prompts).float(), dim=-1).cpu().numpy().astype(np.float64)
        return LabVariant(scheme=scheme, bandwidth=bandwidth, num_base_ranks=new_b, resampled=new_b != learned_b,
                          weights=weights.numpy().astype(np.float64), positions=base_positions(num_ranks, new_b).numpy(),
                          prototypes=protos)
