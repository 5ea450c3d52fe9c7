"""Linear probe: R prototypes learned directly in the embedding space (same cosine head)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.errors import ExplorerError
from explorer.core.options import option
from explorer.core.ranks import Ranks
from explorer.methods.base import ConfigMixin, Method


@dataclass
class LinearConfig(ConfigMixin):
    """Settings of the linear probe."""

    method: str = option("linear-probe")
    num_ranks: int = 101

    def validate(self, context_length: int = 77) -> None:
        if int(self.num_ranks) < 2:
            raise ExplorerError(f"num_ranks must be at least 2 (got {self.num_ranks}).")


class LinearProbe(Method):
    """Baseline: R learned prototypes, cosine head at CLIP's logit scale; needs no text encoder."""

    name = "linear-probe"
    title = "linear probe"
    config_class = LinearConfig
    supports_finetune = False
    form_fields = ()
    checkpoint_content = "prototypes"  # the normalised weight rows are the prototypes: nothing else to store

    def __init__(self, config: LinearConfig, dim: int, logit_scale: float, ranks: Ranks, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.randn(config.num_ranks, dim, generator=generator) * 0.02)
        self.logit_scale = float(logit_scale)
        self.ranks = ranks

    @classmethod
    def build(cls, backbone, config: LinearConfig, ranks: Ranks, seed: int | None = 0) -> "LinearProbe":
        config = LinearConfig(num_ranks=len(ranks))
        config.validate()
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return cls(config, backbone.embed_dim, backbone.logit_scale, ranks, generator).to(backbone.device)

    @classmethod
    def expected_shapes(cls, config: LinearConfig) -> dict[str, tuple]:
        return {"weight": (config.num_ranks, None)}

    def forward(self, full_length: bool = False) -> torch.Tensor:
        return F.normalize(self.weight, dim=-1)
