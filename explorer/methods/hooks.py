"""Optional hooks of a method, and what they return.

A method may implement (docs/writing-a-method.md):

- **decode** -- ``learned_tokens(config, tensors)`` (a classmethod): the token vectors it learned,
  read from a checkpoint's stored tensors, which ``ordinal-explorer decode`` and Geometry's decoding
  section turn into the nearest words (:mod:`explorer.analysis.decode`).
- **lab** -- ``lab_options(config)`` (a classmethod: the schemes and the trained setting) and
  ``reinterpolate(scheme, bandwidth, num_base_ranks)``: its prototypes with its rank embeddings
  re-interpolated, which the interpolation lab shows (:mod:`explorer.analysis.lab`).

The app and the CLI offer decoding or the lab exactly when :func:`offers` says the method implements
them; implementing only part of a capability is refused when the method is registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the dataclasses only carry them: importing this module imports no torch
    import numpy as np
    import torch

CAPABILITIES: dict[str, tuple[str, ...]] = {
    "decode": ("learned_tokens",),
    "lab": ("lab_options", "reinterpolate"),
}


@dataclass
class LearnedTokens:
    """The token vectors a method learned (each row a D-vector in the text tower's token space)."""

    context: torch.Tensor | None  # n x D shared context, or K x n x D per class
    classes: torch.Tensor | None  # K x t x D: the tokens of each class (rank or concept)
    bases: torch.Tensor | None = None  # B x t x D learned bases the class tokens are interpolated from
    base_positions: list[float] | None = None  # the rank index (maybe fractional) of each base


@dataclass
class LabOptions:
    """What the lab's controls offer for a method: its schemes and the setting it was trained with."""

    schemes: tuple[str, ...]
    scheme: str
    bandwidth: float
    num_base_ranks: int


@dataclass
class LabVariant:
    """Prototypes recomputed under one (scheme, bandwidth, number of base ranks)."""

    scheme: str
    bandwidth: float
    num_base_ranks: int
    resampled: bool  # True when the bases were derived for a new B' (not the learned ones)
    weights: np.ndarray  # R x B' interpolation weights
    positions: np.ndarray  # B' base positions (rank indices, may be fractional)
    prototypes: np.ndarray  # R x E, L2-normalised

    @property
    def label(self) -> str:
        """Short name, e.g. 'normal (bw 2) B=5'."""
        scheme = f"normal (bw {self.bandwidth:g})" if self.scheme == "normal" else self.scheme
        return f"{scheme} B={self.num_base_ranks}" + (" (resampled)" if self.resampled else "")


def implemented(method: type, hook: str) -> bool:
    """True when ``method`` overrides ``hook``: its definition is not the root one in its class hierarchy
    (``Method``'s stub, which only raises NotImplementedError)."""
    defined = [vars(klass)[hook] for klass in method.__mro__ if hook in vars(klass)]
    if len(defined) < 2:
        return False
    own, root = defined[0], defined[-1]
    return getattr(own, "__func__", own) is not getattr(root, "__func__", root)


def offers(method: type | None, capability: str) -> bool:
    """True when ``method`` implements every hook of ``capability`` ("decode" or "lab")."""
    return method is not None and all(implemented(method, hook) for hook in CAPABILITIES[capability])


def partial_capabilities(method: type) -> list[str]:
    """Sentences for capabilities ``method`` implements only in part (refused at registration)."""
    out = []
    for capability, hooks in CAPABILITIES.items():
        done = [h for h in hooks if implemented(method, h)]
        if done and len(done) < len(hooks):
            missing = [h for h in hooks if h not in done]
            out.append(f"it implements {', '.join(done)} but not {', '.join(missing)} (the {capability} hooks go together)")
    return out
