"""One reader for datasets whose file names (or folders) carry the age: UTKFace, FG-NET and AFAD.

Each dataset is a :class:`NameSpec` entry in :data:`NAME_SPECS`: which part of the image's path is
matched (its name, its stem or its path relative to the root), a regular expression with an
``age`` group and optionally a ``subject`` group, and the message for names that do not match.
``checks`` are tried first, in order, so that a name failing one gets that check's message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from explorer.core.errors import ExplorerError
from explorer.data.datasets.core import Dataset, Sample
from explorer.data.datasets.files import finish, image_files, need_dir
from explorer.data.datasets.labels import Entry, resolve_values


@dataclass(frozen=True)
class NameSpec:
    """How one dataset's image names give the age (and the subject)."""

    title: str  # the dataset name, e.g. "UTKFace"
    target: str  # what the pattern matches: "name", "stem" or "path" (relative to the root, with /)
    pattern: str  # full-match regex with an 'age' group and an optional 'subject' group
    problem: str  # message for a name that does not match; {name} and {rel} are filled in
    needs: str  # what the folder should hold, for the "no images" message
    checks: tuple[tuple[str, str], ...] = ()  # (regex that must full-match, message) tried before pattern
    ignore_case: bool = False
    inner: str | None = None  # a sub-folder to descend into when present (AFAD-Full)
    fields: tuple[tuple[str, dict[str, str]], ...] = ()  # (pattern group, code -> name): slice fields


NAME_SPECS: dict[str, NameSpec] = {
    "utkface": NameSpec(
        "UTKFace", "name", r"(?P<age>\d+)_(?:(?P<gender>\d)_)?(?:(?P<race>\d)_)?.*",
        "cannot read the age from the file name {name} (expected age_gender_race_date.jpg)",
        "files named age_gender_race_date.jpg",
        fields=(("gender", {"0": "male", "1": "female"}),
                ("race", {"0": "white", "1": "black", "2": "asian", "3": "indian", "4": "others"}))),
    "fgnet": NameSpec(
        "FG-NET", "stem", r"(?P<subject>\d{3})A(?P<age>\d{2})[a-z]?",
        "cannot read subject and age from the file name {name} (expected e.g. 001A02.JPG)",
        "files named like 001A02.JPG", ignore_case=True),
    "afad": NameSpec(
        "AFAD", "path", r"(?P<age>\d+)/(?:111|112)/[^/]+",
        "{rel} is not in an <age>/<111|112>/ folder",
        "AFAD-Full/<age>/<111|112>/*.jpg",
        checks=((r"[^/]+/[^/]+/[^/]+", "{rel} is not in an <age>/<111|112>/ folder"),
                (r"\d+/.*", "bad age folder '{part0}' for {rel}"),
                (r"[^/]+/(?:111|112)/.*", "bad gender folder '{part1}' (expected 111 or 112) for {rel}")),
        inner="AFAD-Full"),
}


def _target(spec: NameSpec, img: Path, rel: str) -> str:
    return {"name": img.name, "stem": img.stem, "path": rel}[spec.target]


def _name_entry(spec: NameSpec, img: Path, root: Path) -> Entry:
    """The entry of one image: its age token and subject, or the message saying what is wrong with its name."""
    rel = img.relative_to(root).as_posix()
    sample = Sample(rel, [], source=rel)
    text = _target(spec, img, rel)
    parts = rel.split("/") + ["", ""]
    fields = {"name": img.name, "rel": rel, "part0": parts[0], "part1": parts[1]}
    flags = re.IGNORECASE if spec.ignore_case else 0
    for regex, message in spec.checks:
        if not re.fullmatch(regex, text, flags):
            sample.error = message.format(**fields)
            return Entry(sample, [])
    m = re.fullmatch(spec.pattern, text, flags)
    if not m:
        sample.error = spec.problem.format(**fields)
        return Entry(sample, [])
    sample.subject = m.groupdict().get("subject")
    sample.fields = {name: names.get(m.group(name) or "", "missing") for name, names in spec.fields}
    return Entry(sample, [str(int(m.group("age")))])


def read_by_names(reader: str, rest: str, opts: dict) -> Dataset:
    """Read a ``reader:DIR`` dataset described by ``NAME_SPECS[reader]``; ranks are the ages min..max present."""
    spec = NAME_SPECS[reader]
    root = need_dir(rest, reader)
    if spec.inner and (root / spec.inner).is_dir():
        root = root / spec.inner
    entries = [_name_entry(spec, img, root) for img in image_files(root)]
    if not entries:
        raise ExplorerError(f"No images found in {root}; {reader}:DIR needs {spec.needs}.")
    ranks = resolve_values(entries, name=root.name, order=opts.get("ranks"), unit=opts.get("unit", "years"), rank_name="age")
    return finish(spec.title, entries, ranks, root)


def name_reader(reader: str) -> Callable[[str, dict], Dataset]:
    """The reader function of one NAME_SPECS entry, for the reader registry."""
    def read(rest: str, opts: dict) -> Dataset:
        return read_by_names(reader, rest, opts)

    read.__name__ = f"read_{reader}"
    read.__doc__ = f"The reader for ``{reader}:DIR`` ({NAME_SPECS[reader].title} file names)."
    return read
