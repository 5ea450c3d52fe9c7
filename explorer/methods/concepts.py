"""NumCLIP's coarse concept bins: concept sets as data, bins files, and the bin of a value.

A bin is (start, name); bin k holds the values in [start_k, start_{k+1}). Presets follow the reference
configs (docs/methods/numclip.md §1): ``age`` child [0, 12], teenager [13, 18], young adult [19, 34], middle adult
[35, 64], older adult [65, ...); ``aesthetics`` and ``historical`` bins start at 0..4 and are named by
their digits; ``dots`` is the demo task's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks


@dataclass(frozen=True)
class ConceptSet:
    """Bin starts and names, and the context text the reference initialises the prompt with."""

    starts: tuple[float, ...]
    names: tuple[str, ...]
    context: str | None


CONCEPT_SETS: dict[str, ConceptSet] = {
    "age": ConceptSet((0, 13, 19, 35, 65), ("child", "teenager", "young adult", "middle adult", "older adult"),
                         "age estimation: the person is a"),
    "adience": ConceptSet((0, 13, 19, 35, 65), ("child", "teenager", "young adult", "middle adult", "older adult"),
                             "age estimation from facial image: the person is a"),
    "aesthetics": ConceptSet((0, 1, 2, 3, 4), ("0", "1", "2", "3", "4"), "aesthetics assessment: the quality of the photo is"),
    "historical": ConceptSet((0, 1, 2, 3, 4), ("0", "1", "2", "3", "4"), "a photo taken in the"),
    "dots": ConceptSet((0, 3, 7, 12, 16), ("very few", "a few", "several", "many", "very many"), "a photo of"),
}


@dataclass
class ConceptBins:
    """K bins: increasing starts (in the ranks' units) and a name each."""

    starts: list[float]
    names: list[str]
    unit: str = ""

    def validate(self) -> None:
        """One sentence for bins that cannot be used."""
        if len(self.starts) != len(self.names):
            raise ExplorerError(f"{len(self.starts)} bin starts but {len(self.names)} concept names; give one name per bin.")
        if len(self.starts) < 2:
            raise ExplorerError("NumCLIP needs at least 2 concept bins.")
        if any(b <= a for a, b in zip(self.starts, self.starts[1:])):
            raise ExplorerError(f"Concept bins must start at increasing values (got {', '.join(f'{s:g}' for s in self.starts)}).")
        if not all(np.isfinite(self.starts)):
            raise ExplorerError("Concept bin starts must be finite numbers.")
        empty = [i + 1 for i, n in enumerate(self.names) if not n.strip()]
        if empty:
            raise ExplorerError(f"Concept bin {empty[0]} has an empty name.")

    def as_ranks(self) -> Ranks:
        """The bins as Ranks (labels = names, values = starts): what the concept prototypes score."""
        return Ranks(list(self.names), [float(s) for s in self.starts], self.unit, "concept")


def read_bins_file(path: str | Path) -> ConceptBins:
    """``start,name`` per line (blank lines and ``#`` comments skipped; a ``start,name`` header allowed)."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExplorerError(f"Cannot read the concept bins file {path}: {exc}.") from exc
    starts, names = [], []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#") or (number == 1 and text.replace(" ", "").lower() == "start,name"):
            continue
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise ExplorerError(f"{path.name} line {number}: expected 2 columns 'start,name', got {len(parts)} ('{text}').")
        try:
            starts.append(float(parts[0]))
        except ValueError:
            raise ExplorerError(f"{path.name} line {number}: the bin start '{parts[0]}' is not a number.") from None
        names.append(parts[1].replace("_", " "))
    if not starts:
        raise ExplorerError(f"{path.name} lists no concept bins; write one 'start,name' line per bin.")
    return ConceptBins(starts, names)


def resolve_concepts(spec: str, unit: str = "") -> tuple[ConceptBins, str | None]:
    """(bins, context text) of a concept set's name or a bins file (a file has no context text)."""
    known = CONCEPT_SETS.get(spec)
    if known is not None:
        return ConceptBins([float(s) for s in known.starts], list(known.names), unit), known.context
    if not Path(spec).expanduser().is_file():
        raise ExplorerError(f"Concepts '{spec}' are neither a concept set ({', '.join(CONCEPT_SETS)}) nor an existing bins file.")
    bins = read_bins_file(spec)
    bins.unit = unit
    return bins, None


def bin_index(values, starts):
    """The bin of each value: the last bin whose start is <= the value (values below the first start: bin 0)."""
    import torch

    values = torch.as_tensor(values, dtype=torch.float32)
    starts = torch.as_tensor(starts, dtype=torch.float32, device=values.device)
    return (torch.bucketize(values, starts, right=True) - 1).clamp(min=0)
