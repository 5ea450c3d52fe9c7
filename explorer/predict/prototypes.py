"""Rank prototypes (R x E, normalised) and prediction from image features.

Once trained, a learner reduces to its prototype matrix and CLIP's logit scale:
``logits = scale * I @ P.T``, ``p = softmax(logits)`` -- a bias-free linear head -- and the point
estimate is the expectation ``p @ values``. :class:`Prototypes` is the default predictor of the
contract in :mod:`explorer.predict.contract`; :class:`PrototypeHead` is its answer as a torch module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.predict.contract import ModulePredictor


class PrototypeHead(nn.Module):
    """features -> (softmax of scale x cosine with the prototypes, the expectation of the values)."""

    def __init__(self, matrix: torch.Tensor, logit_scale: float, values: np.ndarray):
        super().__init__()
        self.register_buffer("matrix", F.normalize(torch.as_tensor(matrix, dtype=torch.float32), dim=-1))
        self.register_buffer("values", torch.as_tensor(values, dtype=torch.float32))
        self.logit_scale = float(logit_scale)

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """N x R softmax of the logits of (normalised) ``features``."""
        logits = self.logit_scale * F.normalize(features.float(), dim=-1) @ self.matrix.T
        return torch.softmax(logits, dim=-1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.probabilities(features)
        return probs, probs @ self.values


@dataclass
class Prototypes(ModulePredictor):
    """Normalised R x E prototype matrix, exp(logit_scale) and the ranks it scores."""

    matrix: torch.Tensor
    logit_scale: float
    ranks: Ranks

    def __post_init__(self) -> None:
        self.matrix = F.normalize(torch.as_tensor(self.matrix, dtype=torch.float32), dim=-1)
        if self.matrix.dim() != 2 or self.matrix.shape[0] != len(self.ranks):
            raise ExplorerError(f"Prototype matrix of shape {tuple(self.matrix.shape)} does not match {len(self.ranks)} ranks.")

    @property
    def num_ranks(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def embed_dim(self) -> int:
        return int(self.matrix.shape[1])

    def export_module(self) -> nn.Module:
        """The prototype head: softmax over the ranks and the expected value."""
        return PrototypeHead(self.matrix, self.logit_scale, self.ranks.value_array)
