"""The Adience reader: the official fold files ``fold_K_data.txt`` and the ``faces/`` images, 8 age groups.

Fold files are tab-separated with a header row (``user_id original_image face_id age ...``); the
image of a row is ``faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>`` (or
``aligned/.../landmark_aligned_face...`` when only ``aligned/`` exists). Ages are group tuples
such as ``(25, 32)``, other tuples such as ``(38, 42)``, single numbers, ``None`` or empty.
"""

from __future__ import annotations

import re
from pathlib import Path

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.data.datasets.core import Dataset, Sample
from explorer.data.datasets.files import finish, need_dir, read_lines
from explorer.data.datasets.labels import Entry

ADIENCE_GROUPS = ((0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100))
ADIENCE_AGES = ("exact", "contained")  # the adience_ages option
_FOLD_COLUMNS = ("user_id", "original_image", "face_id", "age")
_GENDERS = {"m": "male", "f": "female"}  # the fold files' gender column; u / empty: the slice "missing"
_TUPLE = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")


def _age_span(age: str) -> tuple[int, int] | None:
    """'(38, 42)' -> (38, 42), '35' -> (35, 35); None for anything else ('None', '', 'x')."""
    m = _TUPLE.fullmatch(age)
    if m:
        return int(m.group(1)), int(m.group(2))
    return (int(age), int(age)) if age.isdigit() else None


def adience_group(age: str, contained: bool = False) -> int | None:
    """The age-group index of an Adience age cell, or None when it maps to no single group.

    An exact group tuple always maps. With ``contained``, a tuple or single number that lies
    inside exactly one group maps to it too (``(38, 42)`` -> (38, 43), ``35`` -> none, ``(8, 23)`` -> none).
    """
    span = _age_span(age.strip())
    if span is None:
        return None
    if span in ADIENCE_GROUPS:
        return ADIENCE_GROUPS.index(span)
    if not contained or span[0] > span[1]:
        return None
    inside = [i for i, (lo, hi) in enumerate(ADIENCE_GROUPS) if lo <= span[0] and span[1] <= hi]
    return inside[0] if len(inside) == 1 else None


def _age_problem(age: str, contained: bool) -> str:
    if not age:
        return "an empty age"
    if _age_span(age) is None:
        return "not an age or age range"
    if contained:
        return "not inside exactly one of the 8 Adience age groups"
    return "not one of the 8 Adience age groups; adience_ages='contained' maps ages inside one group"


def _fold_files(root: Path) -> tuple[list[int], list[Path]]:
    folds = sorted(root.glob("fold_[0-9]*_data.txt")) or sorted(root.glob("fold_frontal_[0-9]*_data.txt"))
    if not folds:
        raise ExplorerError(f"No Adience fold files (fold_0_data.txt ...) in {root}; point adience: at the folder holding them and faces/.")
    return [int(re.search(r"(\d+)_data", f.name).group(1)) for f in folds], folds


def _fold_header(lines: list[str], path: Path) -> dict[str, int]:
    header = [h.strip().lower() for h in lines[0].split("\t")]
    if not all(n in header for n in _FOLD_COLUMNS):
        raise ExplorerError(f"{path.name} lacks the tab-separated columns {', '.join(_FOLD_COLUMNS)} in its header row.")
    return {n: header.index(n) for n in (*_FOLD_COLUMNS, "gender") if n in header}


def _fold_entries(path: Path, split: str | None, faces: tuple[str, str], contained: bool) -> list[Entry]:
    """One entry per data row of a fold file, with its line number; unmappable ages are recorded as bad labels."""
    lines = read_lines(path, "Adience fold file")
    if not lines:
        return []
    col = _fold_header(lines, path)
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        user, original, face_id, age, gender = (cells[col[n]].strip() if n in col and col[n] < len(cells) else ""
                                                for n in (*_FOLD_COLUMNS, "gender"))
        rel = f"{faces[0]}/{user}/{faces[1]}.{face_id}.{original}"
        s = Sample(rel, [], split=split, subject=user or None, line=number, source=path.name)
        if "gender" in col:
            s.fields = {"gender": _GENDERS.get(gender.lower(), "missing")}
        group = adience_group(age, contained)
        if group is None:
            s.error = f"bad label '{age}' ({_age_problem(age, contained)}) for {rel}"
        else:
            s.labels = [group]
        entries.append(Entry(s, []))
    return entries


def _age_mode(opts: dict) -> bool:
    mode = str(opts.get("adience_ages", "exact")).lower()
    if mode not in ADIENCE_AGES:
        raise ExplorerError(f"adience_ages is '{mode}'; use 'exact' (group tuples only) or 'contained' (ages inside one group).")
    return mode == "contained"


def read_adience(rest: str, opts: dict) -> Dataset:
    """The reader for ``adience:DIR``; ``fold=K`` makes fold K the test split."""
    root = need_dir(rest, "adience")
    fold_numbers, folds = _fold_files(root)
    if (root / "faces").is_dir() or not (root / "aligned").is_dir():
        faces = ("faces", "coarse_tilt_aligned_face")
    else:
        faces = ("aligned", "landmark_aligned_face")
    test_fold = opts.get("fold")
    if test_fold is not None and int(test_fold) not in fold_numbers:
        raise ExplorerError(f"Adience fold {test_fold} does not exist; the folds here are {', '.join(map(str, fold_numbers))}.")
    contained = _age_mode(opts)
    entries: list[Entry] = []
    for fold, path in zip(fold_numbers, folds):
        split = None if test_fold is None else ("test" if fold == int(test_fold) else "train")
        entries += _fold_entries(path, split, faces, contained)
    ranks = Ranks([f"{a}-{b}" for a, b in ADIENCE_GROUPS], list(range(len(ADIENCE_GROUPS))), "", name="age group")
    return finish("Adience", entries, ranks, root)
