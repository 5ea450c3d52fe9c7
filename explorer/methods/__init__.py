"""The methods, registered by name (a registry as data: name -> "module:Class").

================  ===============================================================================
``ordinalclip``   OrdinalCLIP: learned context + B base-rank embeddings interpolated to R ranks
``coop``          CoOp: learned context + one learned embedding per rank
``zeroshot``      zero-shot CLIP: a hand-written template per rank; nothing is learned
``linear-probe``  linear probe: R prototypes learned directly in the embedding space
``numclip``       NumCLIP: concept bins from a CoOp learner, image adapter and soft-bin regressor
================  ===============================================================================

Adding a method is one module with a :class:`~explorer.methods.base.Method` subclass and one line
here; the trainer, checkpoints, CLI and app find it through :func:`get_method`.

:data:`ALIASES` maps the names of earlier versions (``rank``, ``plain``, ``template``, ``linear``) to
today's: version-1 checkpoints store them as ``learner.kind``, and the CLI still takes them
(``--learner rank``, ``--learners rank,plain``). A stored learner without a name is OrdinalCLIP's
(:data:`STORED_DEFAULT`, what the first checkpoints omitted).
"""

from __future__ import annotations

import importlib
from typing import Any

from explorer.core.errors import ExplorerError
from explorer.methods.base import ConfigMixin, Method

REGISTRY: dict[str, str] = {
    "ordinalclip": "explorer.methods.ordinalclip:OrdinalCLIP",
    "coop": "explorer.methods.coop:CoOp",
    "zeroshot": "explorer.methods.zeroshot:ZeroShot",
    "linear-probe": "explorer.methods.linear_probe:LinearProbe",
    "numclip": "explorer.methods.numclip:NumCLIP",
}
# Old name -> registered name (version-1 checkpoints and the old CLI names keep working).
ALIASES: dict[str, str] = {"rank": "ordinalclip", "plain": "coop", "template": "zeroshot", "linear": "linear-probe"}
DEFAULT_METHOD = "ordinalclip"  # what ``train`` runs without --learner
STORED_DEFAULT = "rank"  # the method of a stored learner config without a name (the first checkpoints)


def method_names(aliases: bool = False) -> tuple[str, ...]:
    """Registered method names, in registry order (then the old names, with ``aliases``)."""
    return tuple(REGISTRY) + (tuple(a for a in ALIASES if a not in REGISTRY) if aliases else ())


def canonical_name(name: str) -> str:
    """The registered name of ``name`` (an old name is resolved; unknown names are returned as given)."""
    return name if name in REGISTRY else ALIASES.get(name, name)


def get_method(name: str) -> type[Method]:
    """The Method class registered as ``name`` (or an old name of it); one sentence naming the choices otherwise."""
    target = REGISTRY.get(canonical_name(name))
    if target is None:
        raise ExplorerError(f"Unknown learner '{name}'; choose one of {', '.join(REGISTRY)}.")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def find_method(name: str | None) -> type[Method] | None:
    """:func:`get_method`, or None for a missing or unknown name (e.g. a checkpoint's source learner)."""
    if not name or canonical_name(name) not in REGISTRY:
        return None
    return get_method(name)


def make_config(name: str, **settings):
    """The typed config of method ``name`` from its defaults and ``settings`` (unknown keys refused)."""
    method = get_method(name)
    data = {**settings}
    if "kind" in method.config_class.__dataclass_fields__:
        data["kind"] = method.name
    return method.config_class.from_dict(data)


def stored_config(data: dict[str, Any]):
    """The typed config of a stored learner dict (a checkpoint's ``learner``, a run's ``training.learner``):
    its method from ``kind`` (old names resolved; none: :data:`STORED_DEFAULT`), settings of earlier
    versions that the method does not have dropped (:meth:`Method.stored_settings`)."""
    data = dict(data)
    method = get_method(data.pop("kind", None) or STORED_DEFAULT)
    return make_config(method.name, **method.stored_settings(data))


def learner_config(**settings):
    """A method's config from the keywords of version 1's one prompt-learner config: ``kind`` (old or new
    name; none: :data:`STORED_DEFAULT`) and settings, those the method lacks dropped as in :func:`stored_config`."""
    return stored_config(settings)


__all__ = ["ALIASES", "DEFAULT_METHOD", "REGISTRY", "STORED_DEFAULT", "ConfigMixin", "Method", "canonical_name",
           "find_method", "get_method", "learner_config", "make_config", "method_names",
           "stored_config"]
