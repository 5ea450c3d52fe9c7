"""CoOp: learned context and one independent learned embedding per rank."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.core.errors import ExplorerError
from explorer.core.options import option
from explorer.methods.prompt import LearnedPromptModel, PromptConfig, PromptLearner, TokenTools


@dataclass
class CoOpConfig(PromptConfig):
    """CoOp's settings: the shared prompt ones (R rank embeddings, one per rank)."""

    method: str = option("coop")

    def validate_ranks(self) -> None:
        if self.rank_names is not None and len(self.rank_names) != self.num_ranks:
            raise ExplorerError(f"CoOp needs {self.num_ranks} rank names, got {len(self.rank_names)}.")


class PlainPromptLearner(PromptLearner):
    """CoOp: one independent learned embedding (t tokens) per rank."""

    def __init__(self, config: CoOpConfig, tools: TokenTools, generator: torch.Generator | None = None):
        super().__init__(config, tools, generator)
        self.rank_embeds = self._rank_parameter(config, tools, config.num_ranks, generator)

    def rank_embeddings(self) -> torch.Tensor:
        return self.rank_embeds

    def rank_token_counts(self) -> list[int]:
        """Each rank's own name length when initialised from names (the rest is padding)."""
        counts = self.config.rank_token_counts
        return list(counts) if counts else super().rank_token_counts()


class CoOp(LearnedPromptModel):
    """CoOp: one learned embedding per rank."""

    name = "coop"
    title = "CoOp"
    config_class = CoOpConfig
    form_fields = ("num_context_tokens",)

    @classmethod
    def make_learner(cls, config: CoOpConfig, tools: TokenTools, generator, context_length: int) -> PlainPromptLearner:
        return PlainPromptLearner(config, tools, generator)
