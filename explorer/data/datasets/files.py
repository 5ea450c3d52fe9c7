"""Small helpers the readers share: checking folders, finding images, reading text, building the Dataset."""

from __future__ import annotations

from pathlib import Path

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.data.datasets.core import IMAGE_EXTENSIONS, Dataset
from explorer.data.datasets.labels import Entry


def need_dir(text: str, what: str) -> Path:
    """The folder named in a ``what:DIR`` spec; ExplorerError when it is empty or not a folder."""
    if not text:
        raise ExplorerError(f"The {what} spec needs a folder, e.g. {what}:path/to/data.")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ExplorerError(f"The {what} folder {path} does not exist or is not a folder.")
    return path


def image_files(folder: Path) -> list[Path]:
    """Image files under folder (recursive, hidden entries skipped), sorted."""
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            out.append(p)
    return sorted(out)


def read_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file (a BOM and CRLF or LF line endings are fine)."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExplorerError(f"Cannot read the {what} {path}: {exc}.") from exc


def finish(name: str, entries: list[Entry], ranks: Ranks, root: Path | None) -> Dataset:
    """The Dataset of the read entries; entries with a problem keep no labels."""
    for e in entries:
        if e.sample.error is not None:
            e.sample.labels = []
    return Dataset(name=name, samples=[e.sample for e in entries], ranks=ranks, root=root, spec="")
