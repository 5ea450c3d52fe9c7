"""Summaries of rank distributions (expectation, argmax, median, interval): numpy only, no torch.

:class:`Prediction` and :func:`summarize` are shared by the PyTorch path (``explorer.predict.prototypes``)
and the torch-free ONNX path (``explorer.predict.onnx_runtime``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks


@dataclass
class Prediction:
    """Per image: probabilities over ranks and summaries (rank indices, and values in the ranks' units)."""

    probs: np.ndarray  # N x R
    expected_rank: np.ndarray  # sum_r p_r * r
    expected_value: np.ndarray  # sum_r p_r * value_r
    argmax: np.ndarray  # most probable rank
    median: np.ndarray  # smallest r with CDF >= 0.5
    interval: np.ndarray  # N x 2 rank indices of the central `coverage` interval
    coverage: float
    ranks: Ranks
    values: np.ndarray | None = None  # the method's point estimate in label units (None: expected_value)
    estimate: str = "expected"  # what ``values`` is: "expected", "regressed" (NumCLIP), "median", ...

    @property
    def value(self) -> np.ndarray:
        """The method's point estimate per image in the labels' units (``estimate`` says which)."""
        return self.expected_value if self.values is None else self.values

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    def top(self, i: int, k: int = 3) -> list[tuple[int, float]]:
        """The k most probable ranks of image i as (rank, probability)."""
        order = np.argsort(-self.probs[i], kind="stable")[:k]
        return [(int(r), float(self.probs[i, r])) for r in order]

    def record(self, i: int, k: int = 3) -> dict[str, Any]:
        """A JSON-ready summary of image i."""
        values = self.ranks.value_array
        lo, hi = (int(x) for x in self.interval[i])
        return {
            "expected_rank": float(self.expected_rank[i]),
            "expected_value": float(self.expected_value[i]),
            "argmax": int(self.argmax[i]),
            "argmax_label": self.ranks.labels[int(self.argmax[i])],
            "median": int(self.median[i]),
            "median_value": float(values[int(self.median[i])]),
            "interval": [lo, hi],
            "interval_values": [float(values[lo]), float(values[hi])],
            "coverage": self.coverage,
            "top": [{"rank": r, "label": self.ranks.labels[r], "prob": p} for r, p in self.top(i, k)],
            "unit": self.ranks.unit,
            "value": float(self.value[i]),
            "estimate": self.estimate,
            "probs": [float(p) for p in self.probs[i]],
        }


def summarize(probs: np.ndarray, ranks: Ranks, coverage: float = 0.9) -> Prediction:
    """Summaries of N x R rank distributions: expectation, argmax, median and central interval."""
    if not 0 < coverage < 1:
        raise ExplorerError(f"Interval coverage must be between 0 and 1 (got {coverage}).")
    probs = np.asarray(probs, dtype=np.float64)
    num_ranks = probs.shape[1]
    idx = np.arange(num_ranks, dtype=np.float64)
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]

    def quantile(q: float) -> np.ndarray:
        # smallest r with CDF(r) >= q (a tiny tolerance absorbs float rounding of the cumulative sum)
        return np.minimum((cdf < q - 1e-12).sum(axis=1), num_ranks - 1)

    tail = (1 - coverage) / 2
    return Prediction(
        probs=probs,
        expected_rank=probs @ idx,
        expected_value=probs @ ranks.value_array,
        argmax=probs.argmax(axis=1),
        median=quantile(0.5),
        interval=np.stack([quantile(tail), quantile(1 - tail)], axis=1),
        coverage=coverage,
        ranks=ranks,
    )
