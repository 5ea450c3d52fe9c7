"""Ranks: indices 0..R-1 with display labels and numeric values (ages, decades, grades)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explorer.core.errors import ExplorerError


@dataclass
class Ranks:
    """Display labels and numeric values of the R ranks, plus the unit of the values ("years")."""

    labels: list[str]
    values: list[float]
    unit: str = ""
    name: str = field(default="rank")

    def __post_init__(self) -> None:
        self.labels = [str(x) for x in self.labels]
        self.values = [float(v) for v in self.values]
        if len(self.labels) != len(self.values):
            raise ExplorerError(f"{len(self.labels)} rank labels but {len(self.values)} rank values; give one of each per rank.")
        if len(self.labels) < 2:
            raise ExplorerError("At least 2 ranks are needed for ordinal regression.")
        if not all(np.isfinite(self.values)):
            raise ExplorerError("Rank values must be finite numbers.")

    @classmethod
    def integers(cls, num_ranks: int, start: float = 0, step: float = 1, unit: str = "") -> "Ranks":
        """Ranks whose values are start, start+step, ... and whose labels are those values."""
        values = [start + i * step for i in range(int(num_ranks))]
        labels = [f"{v:g}" for v in values]
        return cls(labels, values, unit)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def value_array(self) -> np.ndarray:
        """Values as a float64 array (length R)."""
        return np.asarray(self.values, dtype=np.float64)

    def format_value(self, value: float, digits: int = 1) -> str:
        """A value with the unit, e.g. '34.2 years'."""
        text = f"{value:.{digits}f}"
        return f"{text} {self.unit}" if self.unit else text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Ranks":
        """Inverse of to_dict."""
        return cls(list(data["labels"]), list(data["values"]), data.get("unit", ""), data.get("name", "rank"))


def read_names_file(path: str | Path, expected: int | None = None, what: str = "ranks") -> list[str]:
    """Names, one per line; underscores become spaces; trailing blank lines ignored.

    ``expected`` is the number of lines required (e.g. B base ranks for OrdinalCLIP).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExplorerError(f"Cannot read the names file {path}: {exc}.") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip().replace("_", " ") for line in lines]
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
        raise ExplorerError(f"The names file {path.name} has an empty line (line {empty[0]}); give one name per line.")
    if expected is not None and len(names) != expected:
        raise ExplorerError(f"The names file {path.name} has {len(names)} lines but {expected} {what} need names; give exactly one name per line.")
    return names


@dataclass
class RankMatch:
    """How a dataset's ranks map onto a checkpoint's: ``index[i]`` is the checkpoint rank of dataset
    rank i (None where it has none); ``by`` is "same", "value", "name" or "position"."""

    index: list[int | None]
    by: str

def _all_numbers(labels: list[str]) -> bool:
    try:
        return all(np.isfinite(float(lab)) for lab in labels)
    except ValueError:
        return False


def _name_key(label: str) -> str:
    return " ".join(label.replace("_", " ").split()).casefold()


def _label_type(ranks: Ranks) -> str:
    return "numbers" if _all_numbers(ranks.labels) else "names"


def match_ranks(source: Ranks, target: Ranks) -> RankMatch:
    """Map ``source`` ranks (a dataset's) onto ``target`` ranks (a checkpoint's): identical ranks as they
    are, numbers by value, names by name, and numbers against names by position when the counts agree."""
    if source.labels == target.labels and source.values == target.values:
        return RankMatch(list(range(len(source))), "same")
    if source.unit and target.unit and _name_key(source.unit) != _name_key(target.unit):
        raise ExplorerError(f"The labels are in {source.unit} but the checkpoint's ranks are in {target.unit}; "
                            "evaluate on labels in the checkpoint's unit.")
    if _label_type(source) == _label_type(target) == "numbers":
        by_value = {round(v, 9): j for j, v in enumerate(target.values)}
        return RankMatch([by_value.get(round(v, 9)) for v in source.values], "value")
    if _label_type(source) == _label_type(target) == "names":
        by_name = {_name_key(lab): j for j, lab in enumerate(target.labels)}
        return RankMatch([by_name.get(_name_key(lab)) for lab in source.labels], "name")
    if len(source) == len(target):
        return RankMatch(list(range(len(source))), "position")
    raise ExplorerError(f"The labels are {_label_type(source)} ({source.labels[0]} .. {source.labels[-1]}) but the checkpoint's "
                        f"{len(target)} ranks are {_label_type(target)} ({target.labels[0]} .. {target.labels[-1]}); nothing matches them.")


def span(ranks: Ranks) -> str:
    """The ranks in a few characters: '0-100' for numbers, '(1930s, ..., 1970s)' for names."""
    if _all_numbers(ranks.labels):
        return f"{ranks.labels[0]}-{ranks.labels[-1]}"
    shown = ranks.labels if len(ranks) <= 3 else [ranks.labels[0], "...", ranks.labels[-1]]
    return f"({', '.join(shown)})"
