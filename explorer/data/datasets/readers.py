"""Readers for the general formats: list files, CSV files and one-folder-per-rank trees.

A reader takes the text after ``reader:`` and the options dict and returns a Dataset whose
entries carry their file and line for messages; ``open_dataset`` then makes the splits.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from explorer.core.errors import ExplorerError
from explorer.data.datasets.core import IMAGE_EXTENSIONS, SPLIT_NAMES, SPLITS, Dataset, Sample
from explorer.data.datasets.files import finish, image_files, need_dir, read_lines
from explorer.data.datasets.labels import Entry, is_number, numeric_value, resolve_list_labels, resolve_values

CSV_PATH = ("path", "image", "file", "filename", "img")
CSV_LABEL = ("label", "labels", "rank", "age", "target", "y", "mean")
CSV_SPLIT = ("split", "set", "subset")
CSV_SUBJECT = ("subject", "subject_id", "person", "identity", "user_id")
CSV_SPREAD = ("stdv", "std", "spread", "sigma")


# --------------------------------------------------------------------------- list files


def _list_files(rest: str) -> tuple[Path, list[str]]:
    parts = rest.split(":")
    root = need_dir(parts[0], "list")
    lists = parts[1:]
    if len(lists) > 3 or not any(lists):
        raise ExplorerError("The list spec is list:ROOT:TRAIN.txt[:VAL.txt[:TEST.txt]] (one to three list files).")
    return root, lists


def _find_list(text: str, root: Path, split: str) -> Path:
    """A list file as given, else inside ROOT."""
    path = Path(text).expanduser()
    if not path.is_file() and (root / text).is_file():
        path = root / text
    if not path.is_file():
        raise ExplorerError(f"The {split} list file {text} was not found (looked as given and inside {root}).")
    return path


def _is_header(tokens: list[str]) -> bool:
    """A header row such as 'path label': a label field that is not numeric-ish and a path that is no image."""
    return (len(tokens) > 1 and not tokens[0].lower().endswith(IMAGE_EXTENSIONS)
            and all(numeric_value(t) is None for t in tokens[1:]))


def _list_entries(path: Path, split: str) -> list[Entry]:
    """One entry per content line (blank lines, '#' comments and a first header row skipped)."""
    entries: list[Entry] = []
    first = True
    for number, line in enumerate(read_lines(path, "list file"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        tokens = stripped.split()
        if first and _is_header(tokens):
            first = False
            continue
        first = False
        entries.append(Entry(Sample(tokens[0], [], split=split, line=number, source=path.name), tokens[1:]))
    return entries


def read_list(rest: str, opts: dict) -> Dataset:
    """The reader for ``list:ROOT:TRAIN.txt[:VAL.txt[:TEST.txt]]``."""
    root, lists = _list_files(rest)
    entries: list[Entry] = []
    for split, text in zip(SPLITS, lists):
        if text:
            entries += _list_entries(_find_list(text, root, split), split)
    ranks = resolve_list_labels(entries, name=f"{root.name} lists", order=opts.get("ranks"),
                                num_ranks=opts.get("num_ranks"), unit=opts.get("unit", ""))
    return finish(root.name or "list", entries, ranks, root)


# --------------------------------------------------------------------------- CSV


def _csv_columns(header: list[str], name: str) -> dict[str, int | None]:
    def column(names: tuple[str, ...]) -> int | None:
        return next((header.index(n) for n in names if n in header), None)

    cols = {"path": column(CSV_PATH), "label": column(CSV_LABEL), "split": column(CSV_SPLIT),
            "subject": column(CSV_SUBJECT), "spread": column(CSV_SPREAD)}
    if cols["path"] is None or cols["label"] is None:
        raise ExplorerError(
            f"The CSV file {name} needs a header row with 'path' and 'label' columns (found: {', '.join(header) or 'nothing'})."
        )
    return cols


def _read_spread(sample: Sample, text: str) -> None:
    """Store an apparent-age spread (a positive number) on the sample, or record why it is unusable."""
    if not text:
        sample.error = f"no spread (stdv) value for {sample.path}"
    elif not is_number(text) or not float(text) > 0 or math.isinf(float(text)):
        sample.error = f"bad spread '{text}' (not a positive number) for {sample.path}"
    else:
        sample.spread = float(text)


MISSING = "missing"  # the slice of samples whose CSV field is empty


def _field_columns(header: list[str], cols: dict[str, int | None]) -> dict[str, int]:
    """Every column that is not path, label, split, subject or spread: a categorical slice field."""
    used = {c for c in cols.values() if c is not None}
    return {name: i for i, name in enumerate(header) if i not in used and name}


def _csv_entry(row: list[str], cols: dict[str, int | None], line: int, source: str, fields: dict[str, int]) -> Entry:
    def cell(key: str) -> str:
        c = cols[key]
        return row[c].strip() if c is not None and c < len(row) else ""

    sample = Sample(cell("path"), [], subject=cell("subject") or None, line=line, source=source)
    sample.fields = {name: (row[i].strip() if i < len(row) else "") or MISSING for name, i in fields.items()}
    split = cell("split").lower()
    if split:
        if split in SPLIT_NAMES:
            sample.split = SPLIT_NAMES[split]
        else:
            sample.error = f"unknown split '{split}' (use train, val or test) for {sample.path}"
    if cols["spread"] is not None and sample.error is None:
        _read_spread(sample, cell("spread"))
    if not sample.path:
        sample.error = "empty path"
    return Entry(sample, [t.strip() for t in cell("label").split(";") if t.strip()])


def read_csv(rest: str, opts: dict) -> Dataset:
    """The reader for ``csv:FILE`` (header row with path and label columns; optional split, subject, stdv;
    every other column is a categorical slice field, empty cells in the slice ``missing``)."""
    path = Path(rest).expanduser()
    if not path.is_file():
        raise ExplorerError(f"The CSV file {rest} was not found.")
    reader = csv.reader(read_lines(path, "CSV file"))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ExplorerError(f"The CSV file {path.name} is empty; it needs a header row with path and label columns.") from None
    cols = _csv_columns(header, path.name)
    fields = _field_columns(header, cols)
    entries = [_csv_entry(row, cols, reader.line_num, path.name, fields) for row in reader if any(c.strip() for c in row)]
    ranks = resolve_values(entries, name=path.name, order=opts.get("ranks"),
                           num_ranks=opts.get("num_ranks"), unit=opts.get("unit", ""))
    return finish(path.stem, entries, ranks, path.parent)


# --------------------------------------------------------------------------- folders


def _folder_order(folders: list[str], root: Path) -> list[str]:
    """Rank folders in numeric order when every name is a number, else alphabetical."""
    if len(folders) < 2:
        raise ExplorerError(f"The folder {root} has {len(folders)} sub-folders; give one sub-folder per rank (at least 2).")
    if all(is_number(f) for f in folders):
        return sorted(folders, key=float)
    return sorted(folders, key=lambda f: (f.casefold(), f))


def read_folder(rest: str, opts: dict) -> Dataset:
    """The reader for ``folder:DIR`` (one sub-folder per rank)."""
    root = need_dir(rest, "folder")
    entries: list[Entry] = []
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            entries.append(Entry(Sample(p.name, [], source=p.name, error=f"{p.name} is not inside a rank folder"), []))
    for folder in folders:
        for img in image_files(root / folder):
            rel = img.relative_to(root).as_posix()
            entries.append(Entry(Sample(rel, [], source=rel), [folder]))
    order = opts.get("ranks")
    if order is None:
        order = _folder_order(folders, root)
    ranks = resolve_values(entries, name=root.name, order=order, unit=opts.get("unit", ""), index_fallback=False)
    for e in entries:
        if e.sample.error and e.sample.error.startswith("bad label"):
            e.sample.error = f"folder '{e.tokens[0]}' is not one of the given ranks"
    return finish(root.name, entries, ranks, root)
