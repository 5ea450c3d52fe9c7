"""The bad-data report: bad labels and missing or unreadable images, with file and line numbers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from explorer.core.errors import ExplorerError
from explorer.data.datasets.core import SHOW, Dataset, ValidationReport


def _check_file(path: Path) -> str | None:
    """What is wrong with an image file ('missing file', 'empty file', 'unreadable image (...)'), or None."""
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


def _label_problems(dataset: Dataset) -> dict[int, str]:
    """Sample index -> message for parse errors, missing labels and labels out of range."""
    bad: dict[int, str] = {}
    r = len(dataset.ranks)
    for i, s in enumerate(dataset.samples):
        if s.error is not None:
            bad[i] = f"{s.where}: {s.error}"
        elif not s.labels:
            bad[i] = f"{s.where}: no label for {s.path}"
        elif not all(0 <= lab < r for lab in s.labels):
            bad[i] = f"{s.where}: label out of range 0..{r - 1} for {s.path}"
    return bad


def _image_problems(dataset: Dataset, skip: dict[int, str]) -> dict[int, str]:
    """Sample index -> message for missing, empty or unreadable image files (entries in skip are not checked)."""
    todo = [i for i in range(len(dataset.samples)) if i not in skip]
    paths = [dataset.image_path(dataset.samples[i]) for i in todo]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(_check_file, paths))
    bad: dict[int, str] = {}
    for i, problem in zip(todo, results):
        if problem:
            s = dataset.samples[i]
            bad[i] = f"{s.where}: {problem} {s.path}" if s.where != s.path else f"{problem} {s.path}"
    return bad


def _drop(dataset: Dataset, bad: dict[int, str]) -> None:
    """Remove the bad samples and renumber the splits."""
    keep = [i for i in range(len(dataset.samples)) if i not in bad]
    new_index = {old: new for new, old in enumerate(keep)}
    dataset.samples = [dataset.samples[i] for i in keep]
    dataset.splits = {s: [new_index[i] for i in idx if i in new_index] for s, idx in dataset.splits.items()}


def validate(dataset: Dataset, check_images: bool = True, skip_bad: bool = False) -> ValidationReport:
    """Find bad labels and missing/unreadable images; raise ExplorerError, or with skip_bad drop them and report."""
    total = len(dataset.samples)
    bad = _label_problems(dataset)
    if check_images and dataset.generator is None:
        bad.update(_image_problems(dataset, bad))
    problems = [bad[i] for i in sorted(bad)]
    if not problems:
        return ValidationReport(total)
    first = "; ".join(problems[:SHOW])
    if not skip_bad:
        verb = "is" if len(problems) == 1 else "are"
        raise ExplorerError(f"{len(problems)} of {total} entries {verb} unusable (first: {first}); fix them or pass --skip-bad.")
    if len(problems) == total:
        raise ExplorerError(f"All {total} entries are unusable (first: {first}); nothing is left to use.")
    _drop(dataset, bad)
    return ValidationReport(total, len(problems), problems)
