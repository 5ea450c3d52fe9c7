"""The methods, registered by name (a registry as data: name -> "module:Class").

=============  ==================================================================================
``rank``       OrdinalCLIP: learned context + B base-rank embeddings interpolated to R ranks
``plain``      CoOp: learned context + one learned embedding per rank
``template``   zero-shot CLIP: a hand-written template per rank; nothing is learned
``linear``     linear probe: R prototypes learned directly in the embedding space
``numclip``    NumCLIP: concept bins from a plain learner, image adapter and soft-bin regressor
=============  ==================================================================================

Adding a method is one module with a :class:`~explorer.methods.base.Method` subclass and one line
here; the trainer, checkpoints, CLI and app find it through :func:`get_method`.
"""

from __future__ import annotations

import importlib

from explorer.core.errors import ExplorerError
from explorer.methods.base import ConfigMixin, Method

REGISTRY: dict[str, str] = {
    "rank": "explorer.methods.ordinalclip:OrdinalCLIP",
    "plain": "explorer.methods.coop:CoOp",
    "template": "explorer.methods.zeroshot:ZeroShot",
    "linear": "explorer.methods.linear_probe:LinearProbe",
    "numclip": "explorer.methods.numclip:NumCLIP",
}


def method_names() -> tuple[str, ...]:
    """Registered method names, in registry order."""
    return tuple(REGISTRY)


def get_method(name: str) -> type[Method]:
    """The Method class registered as ``name``; one sentence naming the choices otherwise."""
    target = REGISTRY.get(name)
    if target is None:
        raise ExplorerError(f"Unknown learner '{name}'; choose one of {', '.join(REGISTRY)}.")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def make_config(name: str, **settings):
    """The typed config of method ``name`` from its defaults and ``settings`` (unknown keys refused)."""
    method = get_method(name)
    data = {**settings}
    if "kind" in {f for f in method.config_class.__dataclass_fields__}:
        data["kind"] = name
    return method.config_class.from_dict(data)


__all__ = ["REGISTRY", "ConfigMixin", "Method", "get_method", "make_config", "method_names"]
