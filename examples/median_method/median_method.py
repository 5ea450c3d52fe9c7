"""OrdinalCLIP whose point estimate is the median of the rank distribution, not its expectation.

A complete plug-in method for OrdinalCLIP Explorer (docs/writing-a-method.md): it learns exactly what
OrdinalCLIP learns; only its answer differs, so it brings its own predictor, whose export module
(features -> probs, the median value) is what ``predict`` runs and what ``export --onnx`` traces. Its one
option, ``--quantile``, picks another quantile of the distribution (0.5: the median).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from explorer.core.errors import ExplorerError
from explorer.core.options import option
from explorer.methods.ordinalclip import OrdinalCLIP, OrdinalCLIPConfig
from explorer.predict.prototypes import PrototypeHead, Prototypes


@dataclass
class MedianConfig(OrdinalCLIPConfig):
    """OrdinalCLIP's settings under this method's name, and the quantile that is the point estimate."""

    method: str = option("ordinalclip-median")
    quantile: float = option(0.5, flag="--quantile", help="the quantile of the rank distribution used as the point estimate (0.5: the median)")

    def validate_ranks(self) -> None:
        super().validate_ranks()
        if not 0 < self.quantile < 1:
            raise ExplorerError(f"The quantile must lie between 0 and 1 (got {self.quantile}).")


class QuantileHead(PrototypeHead):
    """features -> (softmax over the ranks, the value of the smallest rank whose CDF reaches the quantile)."""

    def __init__(self, prototypes: Prototypes, quantile: float):
        super().__init__(prototypes.matrix, prototypes.logit_scale, prototypes.ranks.value_array)
        self.quantile = float(quantile)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.probabilities(features)
        below = (torch.cumsum(probs, dim=-1) < self.quantile).sum(dim=-1).clamp(max=self.values.shape[0] - 1)
        return probs, self.values[below]


class QuantilePrototypes(Prototypes):
    """The prototypes, answering with a quantile of the distribution."""

    estimate = "median"

    def __init__(self, prototypes: Prototypes, quantile: float):
        super().__init__(prototypes.matrix, prototypes.logit_scale, prototypes.ranks)
        self.quantile = float(quantile)
        if self.quantile != 0.5:
            self.estimate = f"quantile {self.quantile:g}"

    def export_module(self) -> nn.Module:
        return QuantileHead(self, self.quantile)


class MedianOrdinalCLIP(OrdinalCLIP):
    """OrdinalCLIP's prompts and training; the median (or another quantile) as the point estimate."""

    name = "ordinalclip-median"
    title = "OrdinalCLIP, median estimate"
    config_class = MedianConfig
    select_metric = "mae_value"  # pick the best epoch by the estimate's own error
    form_fields = ("num_context_tokens", "num_base_ranks", "interpolation", "quantile")

    def predictor(self) -> QuantilePrototypes:
        return QuantilePrototypes(self.prototypes(), self.config.quantile)

    @classmethod
    def predictor_from_checkpoint(cls, checkpoint) -> QuantilePrototypes:
        return QuantilePrototypes(checkpoint.prototypes, checkpoint.method_config.quantile)
