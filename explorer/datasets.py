"""Datasets for ordinal regression: readers, splits, bad-data reports and the paper's data regimes.

A dataset is named by one DATASET spec string, opened with ``open_dataset(spec, **options)``:

    list:ROOT:TRAIN.txt[:VAL.txt[:TEST.txt]]
        The reference list format: one image per line, ``<path relative to ROOT> <int label>
        [<int label> ...]``. Labels are rank indices 0..R-1 (R = largest label + 1 unless
        ``num_ranks`` or ``ranks`` is given). Several labels on a line: a random one is used for
        training and the middle one (of the sorted labels) for evaluation. Blank lines and lines
        starting with ``#`` are skipped. A list file is looked up as given, then inside ROOT.
        Leave a list out with an empty field: ``list:data:train.txt::test.txt``.
    csv:FILE
        A CSV file with a header row holding ``path`` and ``label`` columns and optional ``split``
        (train / val / test) and ``subject`` columns; paths are relative to the CSV's folder.
        Labels are numbers (integers give the ranks min..max; other numbers give one rank per
        distinct value; with ``num_ranks=`` they are rank indices 0..R-1) or, with ``ranks=``, rank
        names (or indices when the names are not numbers); several labels are separated by ``;``.
        An empty ``split`` cell joins the training pool.
    folder:DIR
        One sub-folder per rank, ``DIR/<rank name>/*.jpg`` (any common image type, searched
        recursively). Ranks are ordered numerically when every folder name is a number, else
        alphabetically; pass ``ranks=`` (names in order) to choose the order.
    utkface:DIR
        UTKFace file names ``age_gender_race_date.jpg``; ranks are the ages min..max present.
    adience:DIR
        A folder holding the fold files ``fold_0_data.txt`` ... and ``faces/``; the 8 age groups
        (0, 2) ... (60, 100) are ranks 0..7, the subject is the user id, rows with any other age
        are reported as bad labels. ``fold=K`` makes fold K the test split.
    fgnet:DIR
        FG-NET file names ``001A02.JPG`` (subject 001, age 2); ranks are the ages min..max present.
    afad:DIR
        AFAD folders ``AFAD-Full/<age>/<111|112>/*.jpg`` (DIR may be AFAD-Full itself).
    dots:K[:N[:SEED]]
        A synthetic counting task made in memory: 64x64 images with 0..K dark dots on a light
        background (R = K + 1 ranks), N images per rank (default 40), fully determined by SEED
        (default 0). Nothing is downloaded or written.

A path without a ``kind:`` prefix is opened as ``csv:`` when it is a .csv file and ``folder:`` when
it is a folder. Options (all optional): ``ranks`` (a Ranks, a list of names, a names file or a
comma-separated string), ``num_ranks``, ``unit``, ``fold`` (Adience), ``val_fraction`` (0.1),
``test_fraction`` (0.2), ``seed`` (split seed, 0), ``noise`` (dots colour noise, True) and
``image_size`` (dots, 64).

Splits: splits named in the data (list files, a CSV ``split`` column, the Adience ``fold``) are
used as given; a missing val or test split is carved out of the training pool. Carving is seeded
and stratified by label, and subject-exclusive when subject ids exist. The val split is the one
for model selection; the test split is only ever used for the final report.

Images stay on disk until ``Dataset.load_image`` is called; ``validate`` reports missing or
unreadable images and bad labels together, with file and line numbers.
"""

from __future__ import annotations

import csv
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .errors import ExplorerError
from .images import open_image
from .ranks import Ranks

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
SPLITS = ("train", "val", "test")
KINDS = ("list", "csv", "folder", "utkface", "adience", "fgnet", "afad", "dots")
ADIENCE_GROUPS = ((0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100))
DOTS_MAX_K = 20
DOTS_DEFAULT_N = 40
MAX_RANKS = 1000
_SPLIT_NAMES = {
    "train": "train", "training": "train", "trn": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "tst": "test",
}
_OPTIONS = ("ranks", "num_ranks", "unit", "fold", "val_fraction", "test_fraction", "seed", "noise", "image_size")
_SHOW = 3  # problems quoted in an error message


# --------------------------------------------------------------------------- core types


@dataclass
class Sample:
    """One image: its path (or synthetic id), rank labels, optional split / subject, source line."""

    path: str
    labels: list[int]
    split: str | None = None
    subject: str | None = None
    line: int | None = None
    source: str | None = None  # the file the entry came from (for messages), e.g. "train.txt"
    error: str | None = None  # a parse problem found by the reader (reported by validate)

    @property
    def label(self) -> int:
        """The evaluation label: the middle one of the sorted labels."""
        if not self.labels:
            raise ExplorerError(f"{self.where}: this entry has no usable label; run validate first.")
        return self.labels[len(self.labels) // 2]

    def label_for(self, train: bool, rng: Any = None) -> int:
        """A random label for training (rng: numpy Generator or random.Random), the middle one for evaluation."""
        if not train or len(self.labels) == 1:
            return self.label
        if rng is None:
            rng = np.random.default_rng()
        if hasattr(rng, "integers"):
            return self.labels[int(rng.integers(len(self.labels)))]
        return self.labels[rng.randrange(len(self.labels))]

    @property
    def where(self) -> str:
        """Where the entry came from, for messages: 'train.txt:17' or the path."""
        if self.source and self.line is not None:
            return f"{self.source}:{self.line}"
        return self.source or self.path


@dataclass
class DotsConfig:
    """Parameters of the synthetic dots task."""

    k: int
    n: int = DOTS_DEFAULT_N
    seed: int = 0
    noise: bool = True
    image_size: int = 64


@dataclass
class Dataset:
    """Samples with rank labels, the Ranks they index, where the images live and the splits."""

    name: str
    samples: list[Sample]
    ranks: Ranks
    root: Path | None
    spec: str
    kind: str = ""
    splits: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    dots: DotsConfig | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, sample: Sample) -> Path:
        """Absolute (or root-joined) file path of a sample's image."""
        path = Path(sample.path)
        if path.is_absolute() or self.root is None:
            return path
        return self.root / path

    def load_image(self, sample: Sample | int) -> Image.Image:
        """The sample's image as RGB (generated for the dots task, read from disk otherwise)."""
        if isinstance(sample, (int, np.integer)):
            sample = self.samples[int(sample)]
        if self.dots is not None:
            index = int(sample.path.rsplit("/", 1)[-1])
            return render_dots(sample.label, self.dots.seed, index, self.dots.image_size, self.dots.noise)
        return open_image(self.image_path(sample), name=sample.path)

    def eval_labels(self, indices: Sequence[int] | None = None) -> list[int]:
        """Evaluation labels (middle label) of the given sample indices (all samples by default)."""
        chosen = range(len(self.samples)) if indices is None else indices
        return [self.samples[i].label for i in chosen]

    def split_indices(self, split: str) -> list[int]:
        """Sample indices of a split ('train', 'val' or 'test')."""
        if split not in SPLITS:
            raise ExplorerError(f"Unknown split '{split}'; use train, val or test.")
        return list(self.splits.get(split, []))

    def label_counts(self, indices: Sequence[int] | None = None) -> list[int]:
        """Number of samples per rank (evaluation label) among the given indices."""
        counts = [0] * len(self.ranks)
        chosen = range(len(self.samples)) if indices is None else indices
        for i in chosen:
            s = self.samples[i]
            if s.error is None and s.labels:
                counts[s.label] += 1
        return counts

    def summary(self) -> dict[str, Any]:
        """JSON-ready overview: name, kind, sizes, ranks, split sizes and unusable entries."""
        return {
            "name": self.name,
            "kind": self.kind,
            "spec": self.spec,
            "root": str(self.root) if self.root is not None else None,
            "num_samples": len(self.samples),
            "num_ranks": len(self.ranks),
            "ranks": self.ranks.to_dict(),
            "splits": {k: len(v) for k, v in self.splits.items()},
            "num_subjects": len({s.subject for s in self.samples if s.subject is not None}),
            "parse_problems": sum(1 for s in self.samples if s.error is not None),
        }


@dataclass
class ValidationReport:
    """What validate found: entries checked, entries skipped and the problem messages."""

    total: int
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        """Entries left after skipping."""
        return self.total - self.skipped

    def __str__(self) -> str:
        if not self.problems:
            return f"All {self.total} entries are usable."
        first = "; ".join(self.problems[:_SHOW])
        return f"Skipped {self.skipped} of {self.total} unusable entries (first: {first})."


# --------------------------------------------------------------------------- entry point


def open_dataset(spec: str, **options: Any) -> Dataset:
    """Open a dataset from a DATASET spec string (see the module docstring) and make its splits."""
    if not isinstance(spec, str) or not spec.strip():
        raise ExplorerError("The dataset spec is empty; use e.g. list:ROOT:train.txt, csv:FILE, folder:DIR or dots:5.")
    unknown = sorted(k for k in options if k not in _OPTIONS)
    if unknown:
        raise ExplorerError(f"Unknown dataset option '{unknown[0]}'; the options are {', '.join(_OPTIONS)}.")
    opts = {k: v for k, v in options.items() if v is not None}
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    kind = kind.lower()
    if not sep or kind not in KINDS:
        path = Path(spec)
        if path.is_file() and path.suffix.lower() == ".csv":
            kind, rest = "csv", spec
        elif path.is_dir():
            kind, rest = "folder", spec
        else:
            raise ExplorerError(
                f"Cannot read the dataset spec '{spec}'; start it with one of {', '.join(k + ':' for k in KINDS)} "
                "(e.g. list:ROOT:train.txt or dots:5)."
            )
    readers = {
        "list": _read_list, "csv": _read_csv, "folder": _read_folder, "utkface": _read_utkface,
        "adience": _read_adience, "fgnet": _read_fgnet, "afad": _read_afad, "dots": _read_dots,
    }
    dataset = readers[kind](rest, opts)
    dataset.spec = spec
    dataset.kind = kind
    make_splits(
        dataset,
        val_fraction=float(opts.get("val_fraction", 0.1)),
        test_fraction=float(opts.get("test_fraction", 0.2)),
        seed=int(opts.get("seed", 0)),
    )
    return dataset


# --------------------------------------------------------------------------- label resolution


@dataclass
class _Entry:
    sample: Sample
    tokens: list[str]


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _read_order(order: Any) -> list[str] | Ranks:
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


def _ranks_from_names(names: list[str], unit: str) -> Ranks:
    values = [float(n) for n in names] if all(_is_number(n) for n in names) else list(range(len(names)))
    return Ranks(names, values, unit)


def _resolve(entries: list[_Entry], *, mode: str, name: str, order: Any = None, num_ranks: int | None = None,
             unit: str = "", rank_name: str = "rank", index_fallback: bool = True) -> Ranks:
    """Turn label tokens into rank indices (errors recorded on the entries) and return the Ranks.

    mode 'index': tokens are rank indices 0..R-1 (the list format).
    mode 'value': tokens are values (ages, grades) or, with an order, rank names.
    """
    ranks: Ranks | None = None
    lookup: dict[str, int] = {}
    numeric: dict[float, int] = {}
    index_ok = False
    if order is not None:
        got = _read_order(order)
        if isinstance(got, Ranks):  # a copy: the caller's object is never changed
            ranks = Ranks(list(got.labels), list(got.values), got.unit or unit, got.name)
        else:
            ranks = _ranks_from_names(got, unit)
            ranks.name = rank_name
        lookup = {lab: i for i, lab in enumerate(ranks.labels)}
        if all(_is_number(lab) for lab in ranks.labels):
            numeric = {float(lab): i for i, lab in enumerate(ranks.labels)}
        else:
            index_ok = index_fallback
    elif num_ranks is not None:
        if int(num_ranks) < 2:
            raise ExplorerError(f"num_ranks is {num_ranks}; ordinal regression needs at least 2 ranks.")
        ranks = Ranks.integers(int(num_ranks), unit=unit)
        ranks.name = rank_name

    live = [e for e in entries if e.sample.error is None]
    for e in live:
        if not e.tokens:
            e.sample.error = f"no label for {e.sample.path}"

    if mode == "index":
        parsed: dict[int, list[int]] = {}
        for j, e in enumerate(live):
            if e.sample.error:
                continue
            vals = []
            for tok in e.tokens:
                try:
                    vals.append(int(tok))
                except ValueError:
                    e.sample.error = f"bad label '{tok}' (not an integer) for {e.sample.path}"
                    break
            else:
                parsed[j] = vals
        if ranks is None:
            if not parsed:
                raise ExplorerError(f"{name}: no line has a usable integer label; lines read '<path> <int label>'.")
            top = max((v for vals in parsed.values() for v in vals if v >= 0), default=-1)
            if top + 1 > MAX_RANKS:
                raise ExplorerError(f"{name}: the largest label is {top}, giving over {MAX_RANKS} ranks; check for a bad label or pass num_ranks.")
            if top < 1:
                raise ExplorerError(f"{name}: every usable label is {max(top, 0)}; ordinal regression needs at least 2 ranks.")
            ranks = Ranks.integers(top + 1, unit=unit)
        r = len(ranks)
        for j, vals in parsed.items():
            e = live[j]
            bad = [v for v in vals if not 0 <= v < r]
            if bad:
                e.sample.error = f"label {bad[0]} out of range 0..{r - 1} for {e.sample.path}"
            else:
                e.sample.labels = sorted(vals)
        return ranks

    # mode == "value"
    if ranks is not None and order is not None:
        for e in live:
            if e.sample.error:
                continue
            out = []
            for tok in e.tokens:
                if tok in lookup:
                    out.append(lookup[tok])
                elif numeric and _is_number(tok) and float(tok) in numeric:
                    out.append(numeric[float(tok)])
                elif index_ok and re.fullmatch(r"\d+", tok) and int(tok) < len(ranks):
                    out.append(int(tok))
                else:
                    e.sample.error = f"bad label '{tok}' (not one of the {len(ranks)} rank names) for {e.sample.path}"
                    break
            else:
                e.sample.labels = sorted(out)
        return ranks

    values: dict[int, list[float]] = {}
    for j, e in enumerate(live):
        if e.sample.error:
            continue
        vals = []
        for tok in e.tokens:
            if not _is_number(tok):
                e.sample.error = f"bad label '{tok}' (not a number; pass ranks= to use names) for {e.sample.path}"
                break
            vals.append(float(tok))
        else:
            values[j] = vals
    if ranks is not None:  # num_ranks given: values are indices
        r = len(ranks)
        for j, vals in values.items():
            e = live[j]
            bad = [v for v in vals if not (v.is_integer() and 0 <= v < r)]
            if bad:
                e.sample.error = f"label {bad[0]:g} out of range 0..{r - 1} for {e.sample.path}"
            else:
                e.sample.labels = sorted(int(v) for v in vals)
        return ranks
    distinct = sorted({v for vals in values.values() for v in vals})
    if len(distinct) < 2:
        only = f" ({distinct[0]:g})" if distinct else ""
        raise ExplorerError(f"{name} has fewer than 2 distinct usable labels{only}; ordinal regression needs at least 2 ranks.")
    if all(v.is_integer() for v in distinct):
        lo, hi = int(distinct[0]), int(distinct[-1])
        if hi - lo + 1 > MAX_RANKS:
            raise ExplorerError(f"{name}: labels run from {lo} to {hi}, over {MAX_RANKS} ranks; check for a bad label or pass ranks=.")
        ranks = Ranks.integers(hi - lo + 1, start=lo, unit=unit)
        index = {float(v): int(v) - lo for v in range(lo, hi + 1)}
    else:
        if len(distinct) > MAX_RANKS:
            raise ExplorerError(f"{name} has {len(distinct)} distinct label values, over {MAX_RANKS} ranks; pass ranks= to name them.")
        ranks = Ranks([f"{v:g}" for v in distinct], distinct, unit)
        index = {v: i for i, v in enumerate(distinct)}
    for j, vals in values.items():
        live[j].sample.labels = sorted(index[v] for v in vals)
    ranks.name = rank_name
    return ranks


def _finish(name: str, entries: list[_Entry], ranks: Ranks, root: Path | None) -> Dataset:
    for e in entries:
        if e.sample.error is not None:
            e.sample.labels = []
    return Dataset(name=name, samples=[e.sample for e in entries], ranks=ranks, root=root, spec="")


def _need_dir(text: str, what: str) -> Path:
    if not text:
        raise ExplorerError(f"The {what} spec needs a folder, e.g. {what}:path/to/data.")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ExplorerError(f"The {what} folder {path} does not exist or is not a folder.")
    return path


def _image_files(folder: Path) -> list[Path]:
    """Image files under folder (recursive, hidden entries skipped), sorted."""
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            out.append(p)
    return sorted(out)


# --------------------------------------------------------------------------- readers


def _read_list(rest: str, opts: dict) -> Dataset:
    parts = rest.split(":")
    root = _need_dir(parts[0], "list")
    lists = parts[1:]
    if len(lists) > 3 or not any(lists):
        raise ExplorerError("The list spec is list:ROOT:TRAIN.txt[:VAL.txt[:TEST.txt]] (one to three list files).")
    entries: list[_Entry] = []
    for split, text in zip(SPLITS, lists):
        if not text:
            continue
        path = Path(text).expanduser()
        if not path.is_file() and (root / text).is_file():
            path = root / text
        if not path.is_file():
            raise ExplorerError(f"The {split} list file {text} was not found (looked as given and inside {root}).")
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ExplorerError(f"Cannot read the list file {path}: {exc}.") from exc
        for number, line in enumerate(lines, start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            tokens = stripped.split()
            sample = Sample(tokens[0], [], split=split, line=number, source=path.name)
            entries.append(_Entry(sample, tokens[1:]))
    ranks = _resolve(entries, mode="index", name=f"{root.name} lists", order=opts.get("ranks"),
                     num_ranks=opts.get("num_ranks"), unit=opts.get("unit", ""))
    return _finish(root.name or "list", entries, ranks, root)


def _read_csv(rest: str, opts: dict) -> Dataset:
    path = Path(rest).expanduser()
    if not path.is_file():
        raise ExplorerError(f"The CSV file {rest} was not found.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExplorerError(f"Cannot read the CSV file {path}: {exc}.") from exc
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ExplorerError(f"The CSV file {path.name} is empty; it needs a header row with path and label columns.") from None

    def column(*names: str) -> int | None:
        for n in names:
            if n in header:
                return header.index(n)
        return None

    c_path = column("path", "image", "file", "filename", "img")
    c_label = column("label", "labels", "rank", "age", "target", "y")
    c_split = column("split", "set", "subset")
    c_subject = column("subject", "subject_id", "person", "identity", "user_id")
    if c_path is None or c_label is None:
        raise ExplorerError(
            f"The CSV file {path.name} needs a header row with 'path' and 'label' columns (found: {', '.join(header) or 'nothing'})."
        )
    entries: list[_Entry] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        cell = lambda c: row[c].strip() if c is not None and c < len(row) else ""  # noqa: E731
        sample = Sample(cell(c_path), [], subject=cell(c_subject) or None, line=line, source=path.name)
        split = cell(c_split).lower()
        if split:
            if split in _SPLIT_NAMES:
                sample.split = _SPLIT_NAMES[split]
            else:
                sample.error = f"unknown split '{split}' (use train, val or test) for {sample.path}"
        if not sample.path:
            sample.error = "empty path"
        tokens = [t.strip() for t in cell(c_label).split(";") if t.strip()]
        entries.append(_Entry(sample, tokens))
    ranks = _resolve(entries, mode="value", name=path.name, order=opts.get("ranks"),
                     num_ranks=opts.get("num_ranks"), unit=opts.get("unit", ""))
    return _finish(path.stem, entries, ranks, path.parent)


def _read_folder(rest: str, opts: dict) -> Dataset:
    root = _need_dir(rest, "folder")
    entries: list[_Entry] = []
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            s = Sample(p.name, [], source=p.name, error=f"{p.name} is not inside a rank folder")
            entries.append(_Entry(s, []))
    for folder in folders:
        for img in _image_files(root / folder):
            rel = img.relative_to(root).as_posix()
            entries.append(_Entry(Sample(rel, [], source=rel), [folder]))
    order = opts.get("ranks")
    if order is None:
        if len(folders) < 2:
            raise ExplorerError(f"The folder {root} has {len(folders)} sub-folders; give one sub-folder per rank (at least 2).")
        if all(_is_number(f) for f in folders):
            order = sorted(folders, key=float)
        else:
            order = sorted(folders, key=lambda f: (f.casefold(), f))
    ranks = _resolve(entries, mode="value", name=root.name, order=order, unit=opts.get("unit", ""), index_fallback=False)
    for e in entries:
        if e.sample.error and e.sample.error.startswith("bad label"):
            e.sample.error = f"folder '{e.tokens[0]}' is not one of the given ranks"
    return _finish(root.name, entries, ranks, root)


def _read_utkface(rest: str, opts: dict) -> Dataset:
    root = _need_dir(rest, "utkface")
    entries = []
    for img in _image_files(root):
        rel = img.relative_to(root).as_posix()
        s = Sample(rel, [], source=rel)
        m = re.match(r"(\d+)_", img.name)
        if not m:
            s.error = f"cannot read the age from the file name {img.name} (expected age_gender_race_date.jpg)"
        entries.append(_Entry(s, [str(int(m.group(1)))] if m else []))
    if not entries:
        raise ExplorerError(f"No images found in {root}; utkface:DIR needs files named age_gender_race_date.jpg.")
    ranks = _resolve(entries, mode="value", name=root.name, order=opts.get("ranks"), unit=opts.get("unit", "years"), rank_name="age")
    return _finish("UTKFace", entries, ranks, root)


def _read_fgnet(rest: str, opts: dict) -> Dataset:
    root = _need_dir(rest, "fgnet")
    entries = []
    for img in _image_files(root):
        rel = img.relative_to(root).as_posix()
        m = re.fullmatch(r"(\d{3})A(\d{2})[a-z]?", img.stem, flags=re.IGNORECASE)
        s = Sample(rel, [], subject=m.group(1) if m else None, source=rel)
        if not m:
            s.error = f"cannot read subject and age from the file name {img.name} (expected e.g. 001A02.JPG)"
        entries.append(_Entry(s, [str(int(m.group(2)))] if m else []))
    if not entries:
        raise ExplorerError(f"No images found in {root}; fgnet:DIR needs files named like 001A02.JPG.")
    ranks = _resolve(entries, mode="value", name=root.name, order=opts.get("ranks"), unit=opts.get("unit", "years"), rank_name="age")
    return _finish("FG-NET", entries, ranks, root)


def _read_afad(rest: str, opts: dict) -> Dataset:
    root = _need_dir(rest, "afad")
    if (root / "AFAD-Full").is_dir():
        root = root / "AFAD-Full"
    entries = []
    for img in _image_files(root):
        rel = img.relative_to(root)
        s = Sample(rel.as_posix(), [], source=rel.as_posix())
        parts = rel.parts
        tokens: list[str] = []
        if len(parts) != 3:
            s.error = f"{rel.as_posix()} is not in an <age>/<111|112>/ folder"
        elif not parts[0].isdigit():
            s.error = f"bad age folder '{parts[0]}' for {rel.as_posix()}"
        elif parts[1] not in ("111", "112"):
            s.error = f"bad gender folder '{parts[1]}' (expected 111 or 112) for {rel.as_posix()}"
        else:
            tokens = [str(int(parts[0]))]
        entries.append(_Entry(s, tokens))
    if not entries:
        raise ExplorerError(f"No images found in {root}; afad:DIR needs AFAD-Full/<age>/<111|112>/*.jpg.")
    ranks = _resolve(entries, mode="value", name=root.name, order=opts.get("ranks"), unit=opts.get("unit", "years"), rank_name="age")
    return _finish("AFAD", entries, ranks, root)


def _read_adience(rest: str, opts: dict) -> Dataset:
    root = _need_dir(rest, "adience")
    folds = sorted(root.glob("fold_[0-9]*_data.txt")) or sorted(root.glob("fold_frontal_[0-9]*_data.txt"))
    if not folds:
        raise ExplorerError(f"No Adience fold files (fold_0_data.txt ...) in {root}; point adience: at the folder holding them and faces/.")
    if (root / "faces").is_dir() or not (root / "aligned").is_dir():
        face_dir, prefix = "faces", "coarse_tilt_aligned_face"
    else:
        face_dir, prefix = "aligned", "landmark_aligned_face"
    test_fold = opts.get("fold")
    fold_numbers = [int(re.search(r"(\d+)_data", f.name).group(1)) for f in folds]
    if test_fold is not None and int(test_fold) not in fold_numbers:
        raise ExplorerError(f"Adience fold {test_fold} does not exist; the folds here are {', '.join(map(str, fold_numbers))}.")
    groups = {g: i for i, g in enumerate(ADIENCE_GROUPS)}
    entries = []
    for fold, path in zip(fold_numbers, folds):
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ExplorerError(f"Cannot read the Adience fold file {path}: {exc}.") from exc
        if not lines:
            continue
        header = [h.strip().lower() for h in lines[0].split("\t")]
        need = ("user_id", "original_image", "face_id", "age")
        if not all(n in header for n in need):
            raise ExplorerError(f"{path.name} lacks the tab-separated columns {', '.join(need)} in its header row.")
        col = {n: header.index(n) for n in need}
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            cells = line.split("\t")
            get = lambda n: cells[col[n]].strip() if col[n] < len(cells) else ""  # noqa: E731
            user, original, face_id, age = get("user_id"), get("original_image"), get("face_id"), get("age")
            rel = f"{face_dir}/{user}/{prefix}.{face_id}.{original}"
            split = None if test_fold is None else ("test" if fold == int(test_fold) else "train")
            s = Sample(rel, [], split=split, subject=user or None, line=number, source=path.name)
            m = re.fullmatch(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)", age)
            if m and (int(m.group(1)), int(m.group(2))) in groups:
                s.labels = [groups[(int(m.group(1)), int(m.group(2)))]]
            else:
                s.error = f"bad label '{age}' (not one of the 8 Adience age groups) for {rel}"
            entries.append(_Entry(s, []))
    ranks = Ranks([f"{a}-{b}" for a, b in ADIENCE_GROUPS], list(range(len(ADIENCE_GROUPS))), "", name="age group")
    return _finish("Adience", entries, ranks, root)


def _read_dots(rest: str, opts: dict) -> Dataset:
    parts = rest.split(":")
    if not 1 <= len(parts) <= 3 or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise ExplorerError(f"The dots spec is dots:K[:N[:SEED]] with whole numbers, not dots:{rest}.")
    k = int(parts[0])
    n = int(parts[1]) if len(parts) > 1 else DOTS_DEFAULT_N
    seed = int(parts[2]) if len(parts) > 2 else 0
    if not 1 <= k <= DOTS_MAX_K:
        raise ExplorerError(f"dots:K needs 1 <= K <= {DOTS_MAX_K} (K is the largest dot count), not {k}.")
    if n < 1:
        raise ExplorerError("dots:K:N needs at least 1 image per rank (N >= 1).")
    size = int(opts.get("image_size", 64))
    if size < 32:
        raise ExplorerError(f"Dots images must be at least 32 pixels wide, not {size}.")
    config = DotsConfig(k, n, seed, bool(opts.get("noise", True)), size)
    samples = [Sample(f"dots/{label * n + m:06d}", [label]) for label in range(k + 1) for m in range(n)]
    ranks = Ranks([str(i) for i in range(k + 1)], list(range(k + 1)), opts.get("unit", "dots"), name="dot count")
    return Dataset(name=f"dots-{k}", samples=samples, ranks=ranks, root=None, spec="", dots=config)


# --------------------------------------------------------------------------- dots


def _place_dots(count: int, rng: np.random.Generator, size: int) -> list[tuple[float, float, float]]:
    """Non-overlapping (centre x, centre y, radius) by rejection sampling; shrinks, then a grid, if crowded."""
    gap = 2.0
    r_min, r_max = 2.5, size / 64 * 6.5
    for _ in range(4):
        dots: list[tuple[float, float, float]] = []
        for _ in range(count):
            for _ in range(200):
                r = float(rng.uniform(r_min, max(r_min, r_max)))
                x, y = rng.uniform(r + 1, size - 2 - r, size=2)
                if all((x - a) ** 2 + (y - b) ** 2 > (r + c + gap) ** 2 for a, b, c in dots):
                    dots.append((float(x), float(y), r))
                    break
            else:
                break
        if len(dots) == count:
            return dots
        r_max = max(r_min, r_max * 0.75)
    side = math.ceil(math.sqrt(count))  # guaranteed fallback: jittered grid
    cell = size / side
    cells = rng.permutation(side * side)[:count]
    r = max(2.0, min(r_min + 1, cell / 2 - gap))
    out = []
    for c in cells:
        cx = (c % side + 0.5) * cell + rng.uniform(-0.5, 0.5)
        cy = (c // side + 0.5) * cell + rng.uniform(-0.5, 0.5)
        out.append((float(cx), float(cy), float(r)))
    return out


def render_dots(count: int, seed: int, index: int, size: int = 64, noise: bool = True) -> Image.Image:
    """The dots image for (seed, index) with ``count`` dark dots on a light background; deterministic."""
    rng = np.random.default_rng([int(seed), int(index)])
    background = rng.integers(205, 250, size=3)
    img = np.empty((size, size, 3), dtype=np.float64)
    img[:] = background
    yy, xx = np.mgrid[0:size, 0:size]
    for x, y, r in _place_dots(int(count), rng, size):
        mask = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
        img[mask] = rng.integers(10, 70, size=3)
    if noise:
        img += rng.normal(0.0, 3.0, size=img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- splits


def _stratified(indices: list[int], labels: dict[int, int], fractions: dict[str, float], rng: np.random.Generator) -> dict[str, list[int]]:
    """Per-label seeded split; largest-remainder rounding; every label with >= 1 sample keeps one in train."""
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    by_label: dict[int, list[int]] = {}
    for i in indices:
        by_label.setdefault(labels[i], []).append(i)
    keys = sorted(by_label)
    quota: dict[str, dict[int, int]] = {}
    for split in ("test", "val"):
        f = fractions.get(split, 0.0)
        exact = {k: len(by_label[k]) * f for k in keys}
        q = {k: int(math.floor(exact[k])) for k in keys}
        target = int(round(len(indices) * f))
        tie = rng.random(len(keys))
        order = sorted(range(len(keys)), key=lambda j: (-(exact[keys[j]] - q[keys[j]]), tie[j]))
        for j in order[: max(0, target - sum(q.values()))]:
            q[keys[j]] += 1
        quota[split] = q
    for k in keys:
        members = list(by_label[k])
        rng.shuffle(members)
        n = len(members)
        n_test = quota["test"][k]
        n_val = quota["val"][k]
        while n_test + n_val > n - 1 and (n_test or n_val):  # keep one in train
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        out["test"] += members[:n_test]
        out["val"] += members[n_test:n_test + n_val]
        out["train"] += members[n_test + n_val:]
    return out


def _grouped(indices: list[int], labels: dict[int, int], groups: dict[int, str], fractions: dict[str, float],
             rng: np.random.Generator) -> dict[str, list[int]]:
    """Seeded subject-exclusive split: whole groups, largest first, go where they best fix label balance."""
    members: dict[str, list[int]] = {}
    for i in indices:
        members.setdefault(groups[i], []).append(i)
    names = sorted(members)
    tie = rng.random(len(names))
    order = sorted(range(len(names)), key=lambda j: (-len(members[names[j]]), tie[j]))
    keys = sorted({labels[i] for i in indices})
    col = {k: j for j, k in enumerate(keys)}
    n_label = np.zeros(len(keys))
    for i in indices:
        n_label[col[labels[i]]] += 1
    splits = [s for s in ("train", "val", "test")]
    frac = np.array([1.0 - fractions.get("val", 0.0) - fractions.get("test", 0.0), fractions.get("val", 0.0), fractions.get("test", 0.0)])
    target = frac[:, None] * n_label[None, :]
    total_target = frac * len(indices)
    have = np.zeros_like(target)
    total = np.zeros(3)
    weight = 1.0 / np.maximum(n_label, 1.0)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for j in order:
        g = np.zeros(len(keys))
        for i in members[names[j]]:
            g[col[labels[i]]] += 1
        size = g.sum()
        cost = np.empty(3)
        for s in range(3):
            if frac[s] <= 0:
                cost[s] = np.inf
                continue
            d_lab = ((have[s] + g - target[s]) ** 2 - (have[s] - target[s]) ** 2) @ weight
            d_tot = ((total[s] + size - total_target[s]) ** 2 - (total[s] - total_target[s]) ** 2) / max(len(indices), 1)
            cost[s] = d_lab + d_tot
        s = int(np.argmin(cost))
        have[s] += g
        total[s] += size
        out[splits[s]] += members[names[j]]
    return out


def _carve(indices: list[int], dataset: Dataset, fractions: dict[str, float], rng: np.random.Generator) -> dict[str, list[int]]:
    labels = {i: dataset.samples[i].label for i in indices}
    if any(dataset.samples[i].subject is not None for i in indices):
        groups = {i: dataset.samples[i].subject if dataset.samples[i].subject is not None else f"\0{i}" for i in indices}
        return _grouped(indices, labels, groups, fractions, rng)
    return _stratified(indices, labels, fractions, rng)


def make_splits(dataset: Dataset, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> dict[str, list[int]]:
    """Train/val/test sample indices: given splits kept, missing ones carved (seeded, stratified, subject-exclusive); sets dataset.splits.

    Stratification uses each sample's evaluation label; unusable entries (parse errors) are left out.
    Select models on val; test is for the final report only.
    """
    for what, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ExplorerError(f"{what} must be at least 0 and below 1, not {f}.")
    if val_fraction + test_fraction >= 1.0:
        raise ExplorerError(f"val_fraction + test_fraction is {val_fraction + test_fraction:g}; it must stay below 1 to leave training data.")
    usable = [i for i, s in enumerate(dataset.samples) if s.error is None and s.labels]
    given: dict[str, list[int]] = {s: [] for s in SPLITS}
    pool: list[int] = []
    for i in usable:
        split = dataset.samples[i].split
        if split in SPLITS and split != "train":
            given[split].append(i)
        else:
            pool.append(i)  # given train and unassigned samples
    fractions = {"val": 0.0 if given["val"] else val_fraction, "test": 0.0 if given["test"] else test_fraction}
    rng = np.random.default_rng([int(seed), 7919])
    carved = _carve(pool, dataset, fractions, rng) if pool else {s: [] for s in SPLITS}
    splits = {s: sorted(given[s] + carved[s]) for s in SPLITS}
    dataset.splits = splits
    return {s: list(v) for s, v in splits.items()}


# --------------------------------------------------------------------------- bad data


def _check_file(path: Path) -> str | None:
    if not path.is_file():
        return "missing file"
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # noqa: BLE001 - any decoder error means unusable
        return f"unreadable image ({type(exc).__name__})"
    return None


def validate(dataset: Dataset, check_images: bool = True, skip_bad: bool = False) -> ValidationReport:
    """Find bad labels and missing/unreadable images; raise ExplorerError, or with skip_bad drop them and report."""
    total = len(dataset.samples)
    bad: dict[int, str] = {}
    r = len(dataset.ranks)
    for i, s in enumerate(dataset.samples):
        if s.error is not None:
            bad[i] = f"{s.where}: {s.error}"
        elif not s.labels:
            bad[i] = f"{s.where}: no label for {s.path}"
        elif not all(0 <= lab < r for lab in s.labels):
            bad[i] = f"{s.where}: label out of range 0..{r - 1} for {s.path}"
    if check_images and dataset.dots is None:
        todo = [i for i in range(total) if i not in bad]
        paths = [dataset.image_path(dataset.samples[i]) for i in todo]
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(_check_file, paths))
        for i, problem in zip(todo, results):
            if problem:
                s = dataset.samples[i]
                bad[i] = f"{s.where}: {problem} {s.path}" if s.where != s.path else f"{problem} {s.path}"
    problems = [bad[i] for i in sorted(bad)]
    if not problems:
        return ValidationReport(total)
    if not skip_bad:
        first = "; ".join(problems[:_SHOW])
        verb = "is" if len(problems) == 1 else "are"
        raise ExplorerError(
            f"{len(problems)} of {total} entries {verb} unusable (first: {first}); fix them or pass --skip-bad."
        )
    if len(problems) == total:
        raise ExplorerError(f"All {total} entries are unusable (first: {'; '.join(problems[:_SHOW])}); nothing is left to use.")
    keep = [i for i in range(total) if i not in bad]
    new_index = {old: new for new, old in enumerate(keep)}
    dataset.samples = [dataset.samples[i] for i in keep]
    dataset.splits = {s: [new_index[i] for i in idx if i in new_index] for s, idx in dataset.splits.items()}
    return ValidationReport(total, len(problems), problems)


# --------------------------------------------------------------------------- regimes (§6)


def _by_label(indices: Sequence[int], labels: Sequence[int]) -> dict[int, list[int]]:
    if len(indices) != len(labels):
        raise ExplorerError(f"{len(indices)} indices but {len(labels)} labels; give one label per index.")
    out: dict[int, list[int]] = {}
    for i, lab in zip(indices, labels):
        out.setdefault(int(lab), []).append(int(i))
    return out


def few_shot(indices: Sequence[int], labels: Sequence[int], k: int, seed: int = 0) -> list[int]:
    """k training indices per label drawn without replacement (all if fewer); labels[j] belongs to indices[j]."""
    if int(k) < 1:
        raise ExplorerError(f"Few-shot k must be at least 1, not {k}.")
    rng = np.random.default_rng([int(seed), 104729])
    chosen: list[int] = []
    for lab, members in sorted(_by_label(indices, labels).items()):
        if len(members) <= k:
            chosen += members
        else:
            chosen += [members[j] for j in rng.choice(len(members), size=int(k), replace=False)]
    return sorted(chosen)


def label_shift(indices: Sequence[int], labels: Sequence[int], num_classes_c: int, scale_s: float, seed: int = 0) -> list[int]:
    """Label-distribution shift: the c most frequent training labels keep max(int(n*s), 1) images each."""
    if int(num_classes_c) < 0:
        raise ExplorerError(f"The number of shifted labels c must be at least 0, not {num_classes_c}.")
    if not 0.0 < float(scale_s) <= 1.0:
        raise ExplorerError(f"The keep scale s must be in (0, 1], not {scale_s}.")
    rng = np.random.default_rng([int(seed), 130363])
    groups = _by_label(indices, labels)
    ordered = sorted(groups, key=lambda lab: (-len(groups[lab]), lab))  # most frequent first; ties: lower label
    shifted = set(ordered[: int(num_classes_c)])
    chosen: list[int] = []
    for lab in sorted(groups):
        members = groups[lab]
        if lab in shifted:
            keep = max(int(len(members) * float(scale_s)), 1)
            chosen += [members[j] for j in rng.choice(len(members), size=keep, replace=False)]
        else:
            chosen += members
    return sorted(chosen)


def long_tail(indices: Sequence[int], labels: Sequence[int], min_label: int = 50) -> list[int]:
    """Evaluation indices whose label (rank index) is >= min_label (the paper's long-tail test)."""
    if len(indices) != len(labels):
        raise ExplorerError(f"{len(indices)} indices but {len(labels)} labels; give one label per index.")
    return [int(i) for i, lab in zip(indices, labels) if int(lab) >= int(min_label)]
