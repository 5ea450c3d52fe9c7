"""The predictor contract: what every method's predictor is, whoever wrote the method.

A predictor answers from image features with a method's current (or stored) parameters. Its answer
is one torch module, :meth:`Predictor.export_module`: image features ``(N, E)`` (normalised or not)
-> ``probs (N, K)`` over its classes and ``value (N,)``, the point estimate in the labels' units.
The same module answers in Python (:class:`ModulePredictor` implements ``outputs`` and ``predict``
with it) and is what ONNX export traces after the image tower
(:mod:`explorer.store.onnx_export`), so the exported file and the checkpoint cannot disagree.

Built-in answers: the prototype head (:class:`~explorer.predict.prototypes.Prototypes`: logit scale
x cosine, softmax, expectation) and NumCLIP's (adapter, soft-bin regressor, value offset, in
:mod:`explorer.methods.numclip`). A method with another estimate gives its own module
(``examples/median_method``: the median of the distribution). A predictor without
``export_module`` cannot be exported: ``export --onnx`` refuses it in one sentence.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.predict.summaries import Prediction, summarize


@runtime_checkable
class Predictor(Protocol):
    """What evaluation, prediction and export need of any method's predictor."""

    ranks: Ranks  # the labels' ranks: ``value`` is in their units
    estimate: str  # what ``value`` is: "expected", "regressed", "median", ...

    @property
    def classes(self) -> Ranks:
        """What ``probs`` is over: the ranks, or a binned method's bins."""

    @property
    def embed_dim(self) -> int:
        """The size of the image features it takes."""

    def outputs(self, image_features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N x K class probabilities, N values in the labels' units), float64."""

    def class_targets(self, labels: np.ndarray) -> np.ndarray:
        """The class of each rank-index label (the rank itself, or its bin)."""

    def predict(self, image_features: torch.Tensor, coverage: float = 0.9) -> Prediction:
        """The distribution's summaries and the point estimate, per image."""

    def export_module(self) -> nn.Module:
        """The torch module image features -> (probs, value) that ``outputs`` runs and ONNX export traces."""


class ModulePredictor:
    """``outputs`` and ``predict`` through the predictor's own :meth:`export_module` (built once).

    Subclasses set ``ranks``, ``estimate``, ``classes``, ``embed_dim`` and implement ``export_module``;
    ``class_targets`` is the identity (the classes are the ranks) unless overridden."""

    estimate: str = "expected"
    ranks: Ranks

    @property
    def classes(self) -> Ranks:
        return self.ranks

    @property
    def embed_dim(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def export_module(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _answer_module(self) -> nn.Module:
        module = self.__dict__.get("_module")
        if module is None:
            module = self.__dict__["_module"] = self.export_module().eval()
        return module

    def features(self, image_features) -> torch.Tensor:
        """``image_features`` as an N x E float32 tensor on the CPU; one sentence when E is not the predictor's."""
        feats = torch.as_tensor(image_features, dtype=torch.float32).cpu()
        feats = feats[None] if feats.dim() == 1 else feats
        if feats.shape[-1] != self.embed_dim:
            raise ExplorerError(
                f"Image features have {feats.shape[-1]} dimensions but the prototypes have {self.embed_dim}; "
                "the checkpoint was made with another backbone."
            )
        return feats

    @torch.no_grad()
    def outputs(self, image_features) -> tuple[np.ndarray, np.ndarray]:
        """(N x K class probabilities, N values in the labels' units), float64, from the export module."""
        probs, values = self._answer_module()(self.features(image_features))
        return probs.double().numpy(), values.double().numpy()

    def class_targets(self, labels: np.ndarray) -> np.ndarray:
        """The class of each rank-index label: the rank itself."""
        return np.asarray(labels, dtype=np.int64)

    def predict(self, image_features, coverage: float = 0.9) -> Prediction:
        """Distribution over the classes, its summaries and the point estimate for each image."""
        probs, values = self.outputs(image_features)
        pred = summarize(probs, self.classes, coverage)
        pred.values, pred.estimate = values, self.estimate
        return pred


def export_module_of(predictor, name: str) -> nn.Module:
    """The predictor's export module; one sentence when its method gives none (it cannot be exported)."""
    make = getattr(predictor, "export_module", None)
    if make is None:
        raise ExplorerError(f"{name} cannot be exported to ONNX: its predictor ({type(predictor).__name__}) has no "
                            "export module (Predictor.export_module, docs/writing-a-method.md).")
    try:
        return make().eval()
    except NotImplementedError:
        raise ExplorerError(f"{name} cannot be exported to ONNX: its predictor ({type(predictor).__name__}) does not "
                            "implement export_module (docs/writing-a-method.md).") from None
