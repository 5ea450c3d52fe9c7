"""Turning raw label tokens into rank indices and the Ranks they index.

Two algorithms, one per kind of label:

* :func:`resolve_indices` - tokens are rank indices 0..R-1 (the list format);
* :func:`resolve_values` - tokens are values (ages, grades) or, with a rank order, rank names
  (CSV files, folders, face datasets).

:func:`resolve_list_labels` picks between them for list files, whose labels may also be
numeric-ish names such as ``1930s`` or ``3.0``. Problems are recorded on the entries
(``Sample.error``) and reported by ``validate`` with file and line; only problems that leave
nothing usable raise at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.data.datasets.core import MAX_RANKS, Sample

_NUMERIC_ISH = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))('?[A-Za-z]+)?")


@dataclass
class Entry:
    """A sample being read and the raw label tokens of its line."""

    sample: Sample
    tokens: list[str]


def is_number(text: str) -> bool:
    """Whether text is a finite number ('3', '2.5', '-1e3')."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def numeric_value(text: str) -> tuple[float, str] | None:
    """A numeric-ish label's value and suffix: '1930s' -> (1930.0, 's'), '3.0' -> (3.0, ''); None otherwise."""
    m = _NUMERIC_ISH.fullmatch(text.strip())
    if not m:
        return None
    return float(m.group(1)), m.group(2) or ""


def _format_value(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.12g}"


# --------------------------------------------------------------------------- given ranks


def read_order(order: Any) -> list[str] | Ranks:
    """Rank order option -> Ranks or a list of names (a names file, a comma-separated string or a list)."""
    if isinstance(order, Ranks):
        return order
    if isinstance(order, (str, Path)):
        path = Path(order)
        if path.is_file():
            try:
                lines = path.read_text(encoding="utf-8-sig").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ExplorerError(f"Cannot read the rank order file {path}: {exc}.") from exc
            names = [line.strip() for line in lines if line.strip()]
        else:
            names = [n.strip() for n in str(order).split(",") if n.strip()]
    else:
        names = [str(n).strip() for n in order]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ExplorerError(f"The rank order names '{dup}' twice; give each rank name once.")
    if len(names) < 2:
        raise ExplorerError("The rank order needs at least 2 names, given in order (a list, a file or 'a,b,c').")
    return names


def ranks_from_names(names: list[str], unit: str) -> Ranks:
    """Ranks named in order; values are the names when all are numbers, else 0..R-1."""
    values = [float(n) for n in names] if all(is_number(n) for n in names) else list(range(len(names)))
    return Ranks(names, values, unit)


def ranks_from_order(order: Any, unit: str, rank_name: str) -> Ranks:
    """Ranks from the ``ranks=`` option (a copy when given a Ranks: the caller's object is never changed)."""
    got = read_order(order)
    if isinstance(got, Ranks):
        return Ranks(list(got.labels), list(got.values), got.unit or unit, got.name)
    ranks = ranks_from_names(got, unit)
    ranks.name = rank_name
    return ranks


def ranks_from_count(num_ranks: Any, unit: str, rank_name: str) -> Ranks:
    """Ranks 0..num_ranks-1 from the ``num_ranks=`` option."""
    if int(num_ranks) < 2:
        raise ExplorerError(f"num_ranks is {num_ranks}; ordinal regression needs at least 2 ranks.")
    ranks = Ranks.integers(int(num_ranks), unit=unit)
    ranks.name = rank_name
    return ranks


# --------------------------------------------------------------------------- shared steps


def _live(entries: list[Entry]) -> list[Entry]:
    """Entries without a reader error; those with no label token get 'no label' recorded."""
    live = [e for e in entries if e.sample.error is None]
    for e in live:
        if not e.tokens:
            e.sample.error = f"no label for {e.sample.path}"
    return live


def _parse_tokens(live: list[Entry], parse: Callable[[str], Any], why: str) -> dict[int, list]:
    """Position in live -> parsed tokens; the first token parse rejects (None) records 'bad label' on the entry."""
    parsed: dict[int, list] = {}
    for j, e in enumerate(live):
        if e.sample.error:
            continue
        vals = []
        for tok in e.tokens:
            v = parse(tok)
            if v is None:
                e.sample.error = f"bad label '{tok}' ({why}) for {e.sample.path}"
                break
            vals.append(v)
        else:
            parsed[j] = vals
    return parsed


def _assign_indices(live: list[Entry], parsed: dict[int, list], r: int) -> None:
    """Parsed values are rank indices: store them sorted, or record the first one outside 0..r-1."""
    for j, vals in parsed.items():
        e = live[j]
        bad = [v for v in vals if not (float(v).is_integer() and 0 <= v < r)]
        if bad:
            e.sample.error = f"label {_format_value(bad[0])} out of range 0..{r - 1} for {e.sample.path}"
        else:
            e.sample.labels = sorted(int(v) for v in vals)


def _as_index(token: str) -> int | None:
    """An integer rank index ('3', '-1', '3.0'), or None."""
    try:
        return int(token)
    except ValueError:
        got = numeric_value(token)
        return int(got[0]) if got and not got[1] and got[0].is_integer() else None


def _as_number(token: str) -> float | None:
    return float(token) if is_number(token) else None


# --------------------------------------------------------------------------- rank indices


def _ranks_from_top(parsed: dict[int, list[int]], name: str, unit: str) -> Ranks:
    """Ranks 0..top for the largest usable index label."""
    if not parsed:
        raise ExplorerError(f"{name}: no line has a usable integer label; lines read '<path> <int label>'.")
    top = max((v for vals in parsed.values() for v in vals if v >= 0), default=-1)
    if top + 1 > MAX_RANKS:
        raise ExplorerError(f"{name}: the largest label is {top}, giving over {MAX_RANKS} ranks; check for a bad label or pass num_ranks.")
    if top < 1:
        raise ExplorerError(f"{name}: every usable label is {max(top, 0)}; ordinal regression needs at least 2 ranks.")
    return Ranks.integers(top + 1, unit=unit)


def resolve_indices(entries: list[Entry], *, name: str, order: Any = None, num_ranks: int | None = None,
                    unit: str = "", rank_name: str = "rank") -> Ranks:
    """Tokens are integer rank indices 0..R-1; R from ``ranks=``, ``num_ranks=`` or the largest label + 1."""
    ranks = _given_ranks(order, num_ranks, unit, rank_name)
    live = _live(entries)
    parsed = _parse_tokens(live, _as_index, "not an integer")
    if ranks is None:
        ranks = _ranks_from_top(parsed, name, unit)
    _assign_indices(live, parsed, len(ranks))
    return ranks


# --------------------------------------------------------------------------- values and names


def _given_ranks(order: Any, num_ranks: Any, unit: str, rank_name: str) -> Ranks | None:
    if order is not None:
        return ranks_from_order(order, unit, rank_name)
    if num_ranks is not None:
        return ranks_from_count(num_ranks, unit, rank_name)
    return None


def _name_parser(ranks: Ranks, index_fallback: bool) -> Callable[[str], int | None]:
    """A token -> rank index parser for named ranks: by name, by numeric value, or (non-numeric names) by index."""
    lookup = {lab: i for i, lab in enumerate(ranks.labels)}
    numeric = {float(lab): i for i, lab in enumerate(ranks.labels)} if all(is_number(lab) for lab in ranks.labels) else {}
    index_ok = index_fallback and not numeric

    def parse(tok: str) -> int | None:
        if tok in lookup:
            return lookup[tok]
        if numeric and is_number(tok) and float(tok) in numeric:
            return numeric[float(tok)]
        if index_ok and re.fullmatch(r"\d+", tok) and int(tok) < len(ranks):
            return int(tok)
        return None

    return parse


def _assign_by_names(live: list[Entry], ranks: Ranks, index_fallback: bool) -> None:
    parsed = _parse_tokens(live, _name_parser(ranks, index_fallback), f"not one of the {len(ranks)} rank names")
    for j, vals in parsed.items():
        live[j].sample.labels = sorted(vals)


def _ranks_from_values(values: dict[int, list[float]], name: str, unit: str) -> tuple[Ranks, dict[float, int]]:
    """Integer values give the ranks min..max; other numbers one rank per distinct value."""
    distinct = sorted({v for vals in values.values() for v in vals})
    if len(distinct) < 2:
        only = f" ({distinct[0]:g})" if distinct else ""
        raise ExplorerError(f"{name} has fewer than 2 distinct usable labels{only}; ordinal regression needs at least 2 ranks.")
    if all(v.is_integer() for v in distinct):
        lo, hi = int(distinct[0]), int(distinct[-1])
        if hi - lo + 1 > MAX_RANKS:
            raise ExplorerError(f"{name}: labels run from {lo} to {hi}, over {MAX_RANKS} ranks; check for a bad label or pass ranks=.")
        return Ranks.integers(hi - lo + 1, start=lo, unit=unit), {float(v): int(v) - lo for v in range(lo, hi + 1)}
    if len(distinct) > MAX_RANKS:
        raise ExplorerError(f"{name} has {len(distinct)} distinct label values, over {MAX_RANKS} ranks; pass ranks= to name them.")
    return Ranks([f"{v:g}" for v in distinct], distinct, unit), {v: i for i, v in enumerate(distinct)}


def resolve_values(entries: list[Entry], *, name: str, order: Any = None, num_ranks: int | None = None,
                   unit: str = "", rank_name: str = "rank", index_fallback: bool = True) -> Ranks:
    """Tokens are values (ages, grades) or, with ``ranks=``, rank names; with ``num_ranks=`` they are indices."""
    ranks = _given_ranks(order, num_ranks, unit, rank_name)
    live = _live(entries)
    if order is not None:
        _assign_by_names(live, ranks, index_fallback)
        return ranks
    values = _parse_tokens(live, _as_number, "not a number; pass ranks= to use names")
    if ranks is not None:  # num_ranks given: values are indices
        _assign_indices(live, values, len(ranks))
        return ranks
    ranks, index = _ranks_from_values(values, name, unit)
    for j, vals in values.items():
        live[j].sample.labels = sorted(index[v] for v in vals)
    ranks.name = rank_name
    return ranks


# --------------------------------------------------------------------------- list files


def _is_index_like(token: str) -> bool:
    got = numeric_value(token)
    return got is None or (not got[1] and got[0].is_integer())


def _ranks_from_spellings(values: dict[int, list[tuple[float, str]]], name: str, unit: str) -> tuple[Ranks, dict[float, int]]:
    """One rank per distinct value, in value order, named by the value and its suffix when every spelling shares it."""
    suffixes: dict[float, set[str]] = {}
    for vals in values.values():
        for v, suffix in vals:
            suffixes.setdefault(v, set()).add(suffix)
    distinct = sorted(suffixes)
    if len(distinct) < 2:
        only = f" ({_format_value(distinct[0])})" if distinct else ""
        raise ExplorerError(f"{name} has fewer than 2 distinct usable labels{only}; ordinal regression needs at least 2 ranks.")
    if len(distinct) > MAX_RANKS:
        raise ExplorerError(f"{name} has {len(distinct)} distinct label values, over {MAX_RANKS} ranks; pass ranks= to name them.")
    names = [_format_value(v) + (next(iter(suffixes[v])) if len(suffixes[v]) == 1 else "") for v in distinct]
    return Ranks(names, distinct, unit), {v: i for i, v in enumerate(distinct)}


def resolve_numeric_names(entries: list[Entry], *, name: str, unit: str = "", rank_name: str = "rank") -> Ranks:
    """Tokens are numeric-ish names ('1930s', '2.5', '3.0'): one rank per distinct value, in value order."""
    live = _live(entries)
    values = _parse_tokens(live, numeric_value, "not a number")
    ranks, index = _ranks_from_spellings(values, name, unit)
    for j, vals in values.items():
        live[j].sample.labels = sorted(index[v] for v, _ in vals)
    ranks.name = rank_name
    return ranks


def resolve_list_labels(entries: list[Entry], *, name: str, order: Any = None, num_ranks: int | None = None,
                        unit: str = "") -> Ranks:
    """List-file labels: rank indices when every numeric token is a whole number without a suffix
    ('3', '3.0'), else numeric-ish names ('1930s', '2.5') ordered by value; ``ranks=`` names them."""
    tokens = [t for e in entries if e.sample.error is None for t in e.tokens]
    if num_ranks is not None or all(_is_index_like(t) for t in tokens):
        return resolve_indices(entries, name=name, order=order, num_ranks=num_ranks, unit=unit)
    if order is not None:
        return resolve_values(entries, name=name, order=order, unit=unit)
    return resolve_numeric_names(entries, name=name, unit=unit)
