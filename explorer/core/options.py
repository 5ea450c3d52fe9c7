"""Typed options: dataclass fields that carry their command-line flag, help and choices.

Configs (:class:`explorer.training.config.TrainConfig`, each method's config) declare their fields with
:func:`option`; the CLI builds its flags from them (:func:`add_flags`) and reads them back
(:func:`values_from_args`), and the app's Train form builds its fields from them
(:func:`form_fields`, :func:`widget_for`, :func:`default_of`). The defaults live in the dataclasses, once.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields
from typing import Any, Iterable


def option(default: Any = None, *, flag: str | None = None, help: str = "", choices: Iterable[Any] | None = None,
           nargs: int | str | None = None, metavar: Any = None, default_factory: Any = None) -> Any:
    """A dataclass field with CLI metadata (``flag`` None: not on the command line)."""
    meta = {"flag": flag, "help": help, "choices": tuple(choices) if choices is not None else None,
            "nargs": nargs, "metavar": metavar}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls``."""
    for f in fields(cls):
        if f.name == name:
            return _default(f)
    raise KeyError(name)


def flag_fields(cls: type) -> list[Field]:
    """Fields of ``cls`` that have a command-line flag."""
    return [f for f in fields(cls) if f.metadata.get("flag")]


def flag_conflicts(cls: type, seen: dict[str, str]) -> list[str]:
    """Sentences for each flag of ``cls`` that ``seen`` (flag -> field name) has on another field."""
    return [f"{f.metadata['flag']} is declared on field '{f.name}' but is already the flag of '{seen[f.metadata['flag']]}'"
            for f in flag_fields(cls) if seen.get(f.metadata["flag"], f.name) != f.name]


def add_flags(parser: argparse.ArgumentParser, cls: type, seen: dict[str, str] | None = None, note: str = "") -> None:
    """Add one flag per option of ``cls``; a flag in ``seen`` (flag -> field name, filled here) is shared
    when it is on a field of the same name and refused (ValueError) otherwise. Parsed values default to
    None so that :func:`values_from_args` can tell what the user set."""
    seen = {} if seen is None else seen
    conflicts = flag_conflicts(cls, seen)
    if conflicts:
        raise ValueError(f"{cls.__name__}: {'; '.join(conflicts)}.")
    for f in flag_fields(cls):
        flag = f.metadata["flag"]
        if flag in seen:
            continue
        seen[flag] = f.name
        default = _default(f)
        help_text = f.metadata["help"] + note + (f" (default {default})" if default not in (None, False) else "")
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        if f.metadata.get("nargs"):
            kw["nargs"] = f.metadata["nargs"]
        if f.metadata.get("metavar"):
            kw["metavar"] = f.metadata["metavar"]
        kw["type"] = _arg_type(f, default)
        parser.add_argument(flag, **kw)


def _arg_type(f: Field, default: Any):
    type_name = str(f.type)
    if isinstance(default, float) or "float" in type_name:
        return float
    if isinstance(default, int) or type_name.startswith("int"):
        return int
    return str


def values_from_args(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``cls`` the user set on the command line (name -> value)."""
    out = {}
    for f in flag_fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def widget_for(f: Field) -> str | None:
    """The widget a form edits field ``f`` with: ``toggle``, ``choice``, ``int``, ``float``, ``text``
    (an optional text: empty means None), or None when a one-line form field cannot (lists, files)."""
    default, type_name = _default(f), str(f.type)
    if f.metadata.get("nargs") or f.metadata.get("metavar") or isinstance(default, (list, tuple, dict)):
        return None
    if isinstance(default, bool):
        return "toggle"
    if f.metadata.get("choices"):
        return "choice"
    if isinstance(default, int) or (default is None and type_name.startswith("int")):
        return "int"
    if isinstance(default, float) or (default is None and type_name.startswith("float")):
        return "float"
    if isinstance(default, str) or (default is None and type_name.startswith("str")):
        return "text"
    return None


def form_fields(cls: type, names: Iterable[str] | None = None) -> list[Field]:
    """The fields of ``cls`` a form shows: ``names`` in that order, or (None) every option with a flag
    that :func:`widget_for` can edit."""
    by_name = {f.name: f for f in fields(cls)}
    if names is None:
        return [f for f in flag_fields(cls) if widget_for(f) is not None]
    return [by_name[n] for n in names if n in by_name and widget_for(by_name[n]) is not None]


def form_label(f: Field) -> str:
    """A widget label from the field's flag (``--context-tokens`` -> ``Context tokens``) or its name."""
    text = (f.metadata.get("flag") or f.name).lstrip("-").replace("-", " ").replace("_", " ")
    return text[:1].upper() + text[1:]
