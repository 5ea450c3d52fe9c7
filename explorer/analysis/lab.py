"""Interpolation lab: a method's prototypes with its rank embeddings re-interpolated, without retraining.

The lab is an optional capability of a method (:mod:`explorer.methods.hooks`): a method that
implements ``lab_options`` and ``reinterpolate`` (OrdinalCLIP: another interpolation scheme, or
another number of base ranks resampled from its current rank embeddings; see
:mod:`explorer.methods.ordinalclip`) is offered the lab; any other is refused in one sentence.
Recomputing runs the text encoder, so it needs a *full* checkpoint's model on its backbone.
"""

from __future__ import annotations

from explorer.core.errors import ExplorerError
from explorer.methods import Method
from explorer.methods.hooks import LabOptions, LabVariant, offers


def require_lab(method: type[Method], name: str = "This checkpoint") -> None:
    """Raise a one-sentence ExplorerError unless ``method`` implements the lab hooks."""
    if not offers(method, "lab"):
        raise ExplorerError(
            f"{name} is a {method.title or method.__name__} checkpoint; the interpolation lab needs a method whose ranks "
            "are interpolated from base ranks (one that implements Method.reinterpolate, e.g. OrdinalCLIP)."
        )


def lab_options(method: type[Method], config) -> LabOptions:
    """The schemes the lab offers for a checkpoint of ``method`` and the setting it was trained with."""
    require_lab(method)
    return method.lab_options(config)


def recompute(model: Method, scheme: str, bandwidth: float = 1.0, num_base_ranks: int | None = None) -> LabVariant:
    """Prototypes of ``model`` under ``scheme`` (``bandwidth`` for normal) with ``num_base_ranks`` bases
    (None: the learned B). Runs the text encoder: the caller holds the backbone (``handle.use()``)."""
    require_lab(type(model))
    return model.reinterpolate(scheme, float(bandwidth), num_base_ranks)
