"""Rank prototypes (R x E, normalised) and prediction from image features.

Once trained, a learner reduces to its prototype matrix and CLIP's logit scale:
``logits = scale * I @ P.T``, ``p = softmax(logits)`` -- a bias-free linear head.

Every method's predictor has this interface: ``ranks``, ``logits(features)``, ``outputs(features)``
-> (N x K class probabilities, N values in the ranks' units), ``class_targets(labels)`` (the class
of each rank-index label) and ``predict(features)``; :mod:`explorer.analysis.evaluation` scores any
of them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.predict.summaries import Prediction, summarize


@dataclass
class Prototypes:
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

    def logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """N x R logits for image features (normalised here)."""
        feats = torch.as_tensor(image_features, dtype=torch.float32)
        if feats.dim() == 1:
            feats = feats[None]
        if feats.shape[-1] != self.embed_dim:
            raise ExplorerError(
                f"Image features have {feats.shape[-1]} dimensions but the prototypes have {self.embed_dim}; "
                "the checkpoint was made with another backbone."
            )
        feats = F.normalize(feats.to(self.matrix.device), dim=-1)
        return self.logit_scale * feats @ self.matrix.T

    def class_targets(self, labels: np.ndarray) -> np.ndarray:
        """The prototype row of each rank-index label: the rank itself."""
        return np.asarray(labels, dtype=np.int64)

    @torch.no_grad()
    def outputs(self, image_features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N x R rank probabilities, N expected values in the ranks' units)."""
        probs = torch.softmax(self.logits(image_features), dim=-1).cpu().numpy().astype(np.float64)
        return probs, probs @ self.ranks.value_array

    def predict(self, image_features: torch.Tensor, coverage: float = 0.9) -> Prediction:
        """Distribution over ranks and its summaries for each image."""
        with torch.no_grad():
            probs = torch.softmax(self.logits(image_features), dim=-1)
        return summarize(probs.cpu().numpy().astype(np.float64), self.ranks, coverage)


__all__ = ["Prediction", "Prototypes", "summarize"]
