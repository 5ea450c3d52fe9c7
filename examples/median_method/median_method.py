"""OrdinalCLIP whose point estimate is the median of the rank distribution, not its expectation.

A complete plug-in method for OrdinalCLIP Explorer (docs/writing-a-method.md): it learns exactly what
OrdinalCLIP learns; only its answer differs, so it brings its own predictor, whose export module
(features -> probs, median value) is what ``predict`` runs and what ``export --onnx`` traces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from explorer.core.options import option
from explorer.methods.ordinalclip import OrdinalCLIP, OrdinalCLIPConfig
from explorer.predict.prototypes import PrototypeHead, Prototypes


@dataclass
class MedianConfig(OrdinalCLIPConfig):
    """OrdinalCLIP's settings under this method's name."""

    kind: str = option("ordinalclip-median")


class MedianHead(PrototypeHead):
    """features -> (softmax over the ranks, the value of the smallest rank whose CDF reaches 0.5)."""

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.probabilities(features)
        below = (torch.cumsum(probs, dim=-1) < 0.5).sum(dim=-1).clamp(max=self.values.shape[0] - 1)
        return probs, self.values[below]


class MedianPrototypes(Prototypes):
    """The stored prototypes, answering with the median."""

    estimate = "median"

    def export_module(self) -> nn.Module:
        return MedianHead(self.matrix, self.logit_scale, self.ranks.value_array)


class MedianOrdinalCLIP(OrdinalCLIP):
    """OrdinalCLIP's prompts and training; the median as the point estimate."""

    name = "ordinalclip-median"
    title = "OrdinalCLIP, median estimate"
    config_class = MedianConfig
    select_metric = "mae_value"  # pick the best epoch by the median's own error

    def predictor(self) -> MedianPrototypes:
        p = self.prototypes()
        return MedianPrototypes(p.matrix, p.logit_scale, p.ranks)

    @classmethod
    def predictor_from_checkpoint(cls, checkpoint) -> MedianPrototypes:
        p = checkpoint.prototypes
        return MedianPrototypes(p.matrix, p.logit_scale, p.ranks)
