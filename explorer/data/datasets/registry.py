"""``open_dataset``: a DATASET spec string -> a Dataset, through the reader registry.

The registry is data: :data:`READERS` maps each reader's name (``list``, ``csv``, ...) to its reader
function ``reader(rest_of_spec, options) -> Dataset``. Adding a format is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from explorer.core.errors import ExplorerError
from explorer.data.datasets.adience import read_adience
from explorer.data.datasets.core import Dataset
from explorer.data.datasets.dots import read_dots
from explorer.data.datasets.filenames import name_reader
from explorer.data.datasets.readers import read_csv, read_folder, read_list
from explorer.data.datasets.splits import make_splits

Reader = Callable[[str, dict], Dataset]

READERS: dict[str, Reader] = {
    "list": read_list,
    "csv": read_csv,
    "folder": read_folder,
    "utkface": name_reader("utkface"),
    "adience": read_adience,
    "fgnet": name_reader("fgnet"),
    "afad": name_reader("afad"),
    "dots": read_dots,
}
READER_NAMES = tuple(READERS)
OPTIONS = ("ranks", "num_ranks", "unit", "fold", "adience_ages", "val_fraction", "test_fraction", "seed", "noise",
           "image_size")


def _split_spec(spec: str) -> tuple[str, str]:
    """(reader, rest) of a spec; a bare .csv file is csv:, a bare folder is folder:."""
    reader, sep, rest = spec.partition(":")
    reader = reader.lower()
    if sep and reader in READERS:
        return reader, rest
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv", spec
    if path.is_dir():
        return "folder", spec
    raise ExplorerError(
        f"Cannot read the dataset spec '{spec}'; start it with one of {', '.join(k + ':' for k in READER_NAMES)} "
        "(e.g. list:ROOT:train.txt or dots:5)."
    )


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(k for k in options if k not in OPTIONS)
    if unknown:
        raise ExplorerError(f"Unknown dataset option '{unknown[0]}'; the options are {', '.join(OPTIONS)}.")
    return {k: v for k, v in options.items() if v is not None}


def open_dataset(spec: str, **options: Any) -> Dataset:
    """Open a dataset from a DATASET spec string (see the package docstring) and make its splits."""
    if not isinstance(spec, str) or not spec.strip():
        raise ExplorerError("The dataset spec is empty; use e.g. list:ROOT:train.txt, csv:FILE, folder:DIR or dots:5.")
    opts = _check_options(options)
    spec = spec.strip()
    reader, rest = _split_spec(spec)
    dataset = READERS[reader](rest, opts)
    dataset.spec = spec
    dataset.reader = reader
    make_splits(
        dataset,
        val_fraction=float(opts.get("val_fraction", 0.1)),
        test_fraction=float(opts.get("test_fraction", 0.2)),
        seed=int(opts.get("seed", 0)),
    )
    return dataset
