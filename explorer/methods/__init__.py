"""The methods, registered by name: the built-ins (a registry as data: name -> "module:Class") and the
plug-ins of installed distributions (entry-point group ``ordinal_explorer.methods``).

================  ===============================================================================
``ordinalclip``   OrdinalCLIP: learned context + B base-rank embeddings interpolated to R ranks
``coop``          CoOp: learned context + one learned embedding per rank
``zeroshot``      zero-shot CLIP: a hand-written template per rank; nothing is learned
``linear-probe``  linear probe: R prototypes learned directly in the embedding space
``numclip``       NumCLIP: concept bins from a CoOp learner, image adapter and soft-bin regressor
================  ===============================================================================

A method outside this package is one module with a :class:`~explorer.methods.base.Method` subclass in
an installed distribution whose metadata names it under ``[project.entry-points."ordinal_explorer.methods"]``
(``name = "module:Class"``; ``examples/median_method`` is a complete one); the trainer, checkpoints,
CLI and app then find it through :func:`get_method` like a built-in. A method is checked when it is
first loaded (:func:`method_problems`); one that cannot be imported or breaks the contract is
unusable, with one sentence (:func:`unusable_methods`), and the rest are unaffected. Importing this
package imports no method and no torch (:func:`plugin_problems` answers without importing either).

:data:`ALIASES` maps the names of earlier versions (``rank``, ``plain``, ``template``, ``linear``) to
today's: version-1 checkpoints store them, and old command lines still work, with a DeprecationWarning
outside checkpoint loading. A stored learner without a name is OrdinalCLIP's (what the first
checkpoints omitted).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import warnings
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from explorer.core.errors import ExplorerError, one_line
from explorer.core.options import flag_conflicts, flag_fields

if TYPE_CHECKING:
    from explorer.methods.base import Method

ENTRY_POINT_GROUP = "ordinal_explorer.methods"
REGISTRY: dict[str, str] = {
    "ordinalclip": "explorer.methods.ordinalclip:OrdinalCLIP",
    "coop": "explorer.methods.coop:CoOp",
    "zeroshot": "explorer.methods.zeroshot:ZeroShot",
    "linear-probe": "explorer.methods.linear_probe:LinearProbe",
    "numclip": "explorer.methods.numclip:NumCLIP",
}
# Old name -> registered name (version-1 checkpoints and the old CLI names keep working).
ALIASES: dict[str, str] = {"rank": "ordinalclip", "plain": "coop", "template": "zeroshot", "linear": "linear-probe"}
DEFAULT_METHOD = "ordinalclip"  # what ``train`` runs without --method
STORED_DEFAULT = "ordinalclip"  # the method of a stored learner config without a name (the first checkpoints)


@functools.cache
def _installed() -> tuple[dict[str, str], dict[str, str]]:
    """(name -> "module:Class" of the installed plug-ins, name -> why a plug-in entry is not used)."""
    found: dict[str, str] = {}
    problems: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        where = f"the plug-in method '{ep.name}' of {ep.dist.name if ep.dist else 'an installed distribution'}"
        if ep.name in REGISTRY or ep.name in ALIASES:
            problems[ep.name] = f"{where[0].upper()}{where[1:]} is not used: '{ep.name}' is a built-in method's name."
        elif ep.name in found and found[ep.name] != ep.value:
            problems[ep.name] = f"Two installed distributions register a method named '{ep.name}'; neither is used."
        else:
            found[ep.name] = ep.value
    for name in problems:
        found.pop(name, None)
    return found, problems


def registry() -> dict[str, str]:
    """Every known method: name -> "module:Class" (built-ins first, then plug-ins by name)."""
    return {**REGISTRY, **_installed()[0]}


def refresh() -> None:
    """Forget the discovered plug-ins and loaded classes (after a distribution was installed or removed)."""
    _installed.cache_clear()
    _load.cache_clear()
    _FAILED.clear()


_FAILED: dict[str, str] = {}  # name -> why, for every method that failed to load in this process


def method_names(aliases: bool = False) -> tuple[str, ...]:
    """Known method names, built-ins first (then the old names, with ``aliases``); nothing is imported."""
    return tuple(registry()) + (tuple(a for a in ALIASES if a not in REGISTRY) if aliases else ())


def canonical_name(name: str, warn: bool = False) -> str:
    """The registered name of ``name`` (an old name is resolved, with a DeprecationWarning when ``warn``;
    unknown names are returned as given)."""
    if name in ALIASES and name not in REGISTRY:
        if warn:
            warnings.warn(f"The method name '{name}' is deprecated; use '{ALIASES[name]}'.", DeprecationWarning, stacklevel=3)
        return ALIASES[name]
    return name


def get_method(name: str, *, stored: bool = False) -> type[Method]:
    """The Method class registered as ``name``; one sentence naming the choices (or why it is unusable)
    otherwise. An old name is resolved, with a DeprecationWarning unless ``stored`` (a checkpoint's)."""
    canonical = canonical_name(name, warn=not stored)
    if canonical not in registry():
        skipped = _installed()[1].get(canonical)
        raise ExplorerError(skipped or f"Unknown method '{name}'; choose one of {', '.join(registry())}.")
    loaded = _load(canonical)
    if isinstance(loaded, str):
        raise ExplorerError(loaded)
    return loaded


def find_method(name: str | None) -> type[Method] | None:
    """:func:`get_method` of a stored name, or None for a missing, unknown or unusable one."""
    if not name or canonical_name(name) not in registry():
        return None
    loaded = _load(canonical_name(name))
    return None if isinstance(loaded, str) else loaded


@functools.cache
def _load(name: str) -> type[Method] | str:
    """The class registered as ``name``, or the one sentence saying why it cannot be used."""
    loaded = _import(name)
    if isinstance(loaded, str):
        _FAILED[name] = loaded
    return loaded


def _import(name: str) -> type[Method] | str:
    module_name, _, attr = registry()[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a plug-in's import may fail in any way; the rest must stay usable
        return f"The method '{name}' cannot be used: its module '{module_name}' cannot be imported ({one_line(exc)})."
    cls = getattr(module, attr, None)
    if cls is None:
        return f"The method '{name}' cannot be used: module '{module_name}' has no class '{attr}'."
    problems = method_problems(cls, name)
    return f"The method '{name}' cannot be used: {'; '.join(problems)}." if problems else cls


def method_problems(cls: Any, name: str) -> list[str]:
    """What keeps ``cls`` from being the method ``name`` (empty: nothing): the contract of
    docs/writing-a-method.md, the option flags shared with the methods registered before it, the hooks."""
    from explorer.methods.base import ConfigMixin, Method
    from explorer.methods.hooks import partial_capabilities

    if not (isinstance(cls, type) and issubclass(cls, Method)):
        return [f"{getattr(cls, '__name__', cls)!r} is not a Method subclass"]
    config = cls.config_class
    if cls.name != name:
        return [f"its class says its name is '{cls.name}'"]
    if not (dataclasses.is_dataclass(config) and issubclass(config, ConfigMixin)):
        return [f"its config_class {config.__name__} is not a dataclass with ConfigMixin"]
    field = config.__dataclass_fields__.get("method")
    if field is None or field.default != name:
        return [f"its config {config.__name__} has no field 'method' defaulting to '{name}'"]
    variant = [] if cls.variant_field in (None, *config.__dataclass_fields__) else [
        f"its variant_field '{cls.variant_field}' is not a field of {config.__name__}"]
    return _flag_conflicts(cls) + partial_capabilities(cls) + variant


def _flag_conflicts(cls: type[Method]) -> list[str]:
    """A flag this method's config declares on another field name than a method registered before it."""
    out, names = [], list(registry())
    for other_name in names[: names.index(cls.name)] if cls.name in names else names:
        other = _load(other_name)
        if isinstance(other, str):
            continue
        theirs = {f.metadata["flag"]: f.name for f in flag_fields(other.config_class)}
        out += [f"{c} in {other_name} (a shared flag needs the same field name)" for c in flag_conflicts(cls.config_class, theirs)]
    return out


def unusable_methods() -> dict[str, str]:
    """Every known method (and skipped plug-in entry) that cannot be used -> the sentence why (loads each method)."""
    out = dict(_installed()[1])
    for name in registry():
        loaded = _load(name)
        if isinstance(loaded, str):
            out[name] = loaded
    return out


def plugin_problems() -> dict[str, str]:
    """Plug-in entries known to be unusable without importing any method (for the app's Library): entries
    skipped at discovery, modules that are not installed, and methods that already failed to load here."""
    out = dict(_installed()[1])
    for name, target in _installed()[0].items():
        module_name = target.partition(":")[0]
        try:
            missing = importlib.util.find_spec(module_name) is None
        except (ImportError, ValueError):  # a parent package that is missing or broken
            missing = True
        if missing:
            out[name] = f"The method '{name}' cannot be used: its module '{module_name}' is not installed."
    return {**out, **_FAILED}


def __getattr__(name: str):
    """``Method`` and ``ConfigMixin`` (importing them imports torch: only when they are asked for)."""
    if name in ("Method", "ConfigMixin"):
        from explorer.methods import base

        return getattr(base, name)
    raise AttributeError(f"module 'explorer.methods' has no attribute '{name}'")


def make_config(name: str, **settings):
    """The typed config of method ``name`` from its defaults and ``settings`` (unknown keys refused)."""
    method = get_method(name)
    return method.config_class.from_dict({**settings, "method": method.name})


def stored_config(data: dict[str, Any]):
    """The typed config of a stored learner dict (a checkpoint's ``learner``, a run's ``training.learner``):
    its method from ``kind`` (or ``method``; old names resolved silently; none: :data:`STORED_DEFAULT`), settings of
    earlier versions that the method does not have dropped (:meth:`Method.stored_settings`)."""
    data = dict(data)
    name = data.pop("kind", None) or data.pop("method", None) or STORED_DEFAULT
    method = get_method(name, stored=True)
    return method.config_class.from_dict({**method.stored_settings(data), "method": method.name})


__all__ = ["ALIASES", "DEFAULT_METHOD", "ENTRY_POINT_GROUP", "REGISTRY", "STORED_DEFAULT", "ConfigMixin", "Method",
           "canonical_name", "find_method", "get_method", "make_config", "method_names", "method_problems", "plugin_problems", "refresh",
           "registry", "stored_config", "unusable_methods"]
