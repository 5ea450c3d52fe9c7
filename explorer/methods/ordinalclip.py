"""OrdinalCLIP (NeurIPS 2022): learned context and B base-rank embeddings, interpolated to R ranks.

Rank r's embedding is ``sum_k W[r, k] * base_k`` with interpolation weights W (:func:`interpolation_weights`);
the interpolation lab (:mod:`explorer.analysis.lab`) recomputes the prototypes under other weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from explorer.core.errors import ExplorerError
from explorer.core.options import option
from explorer.methods.prompt import PromptConfig, PromptLearner, PromptModel, TokenTools

INTERPOLATIONS = ("linear", "inv_prop", "normal")


@dataclass
class OrdinalCLIPConfig(PromptConfig):
    """OrdinalCLIP's settings: the shared prompt ones plus B base ranks and their interpolation."""

    kind: str = option("ordinalclip")
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
            extra = (" (this file names every rank; the rank learner only learns the base ranks)"
                     if len(self.rank_names) == self.num_ranks else "")
            raise ExplorerError(
                f"The rank learner needs {self.num_base_ranks} base-rank names, one per base rank, "
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

    def set_interpolation(self, scheme: str, bandwidth: float = 1.0) -> None:
        """Swap the interpolation scheme (same base embeddings), e.g. for the interpolation lab."""
        weights = interpolation_weights(self.config.num_ranks, self.config.num_base_ranks, scheme, bandwidth)
        self.interpolation = weights.to(self.rank_embeds.device)
        self.config.interpolation, self.config.bandwidth = scheme, float(bandwidth)


class OrdinalCLIP(PromptModel):
    """Ordered language prototypes from interpolated base-rank embeddings."""

    name = "ordinalclip"
    title = "OrdinalCLIP (rank)"
    config_class = OrdinalCLIPConfig
    supports_lab = True
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
    def rank_token_embeddings(cls, config: OrdinalCLIPConfig, rank_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stored bases interpolated to every rank, and the bases."""
        W = interpolation_weights(config.num_ranks, config.num_base_ranks, config.interpolation, config.bandwidth)
        return torch.einsum("rk,ktd->rtd", W, rank_embeds), rank_embeds
