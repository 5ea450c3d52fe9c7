"""The dataset types: Sample, Dataset, ValidationReport, and the constants the readers share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from explorer.core.errors import ExplorerError
from explorer.core.ranks import Ranks
from explorer.data.images import open_image


class ImageGenerator(Protocol):
    """Draws a sample's image instead of reading a file (the generated dots task)."""

    def render_sample(self, sample: "Sample") -> Image.Image: ...

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
SPLITS = ("train", "val", "test")
MAX_RANKS = 1000
SPLIT_NAMES = {
    "train": "train", "training": "train", "trn": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "tst": "test",
}
SHOW = 3  # problems quoted in an error message


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
    spread: float | None = None  # apparent-age spread (standard deviation, in rank-value units)
    fields: dict[str, str] = field(default_factory=dict)  # categorical slice fields, e.g. {"gender": "female"}

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
class Dataset:
    """Samples with rank labels, the Ranks they index, where the images live and the splits."""

    name: str
    samples: list[Sample]
    ranks: Ranks
    root: Path | None
    spec: str
    reader: str = ""  # the spec's reader: list, csv, folder, utkface, ...
    splits: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    generator: ImageGenerator | None = None  # set: images are drawn, not read (no files to check)
    face_margin: float | None = None  # set: the model sees each image cropped to its largest face (as Predict)

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
        if self.generator is not None:
            return self.generator.render_sample(sample)
        return open_image(self.image_path(sample), name=sample.path)

    def model_input(self, sample: Sample | int) -> tuple[Image.Image, bool | None]:
        """What the model sees and whether a face was found: with ``face_margin`` set, the image cropped
        to its largest face exactly as Predict crops (whole when no face is found); else the whole image
        (found None)."""
        image = self.load_image(sample)
        if self.face_margin is None:
            return image, None
        from explorer.data.faces import crop_face

        crop = crop_face(image, margin=self.face_margin)
        return crop.image, crop.found

    def model_image(self, sample: Sample | int) -> Image.Image:
        """The image the model sees (see :meth:`model_input`)."""
        return self.model_input(sample)[0]

    def spreads(self, samples: Sequence[Sample] | None = None) -> np.ndarray | None:
        """Apparent-age spreads of the samples (all by default) as float64, or None unless every one has a spread."""
        chosen = self.samples if samples is None else samples
        values = [s.spread for s in chosen]
        if not values or any(v is None for v in values):
            return None
        return np.asarray(values, dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        """JSON-ready overview: name, reader, sizes, ranks, split sizes and unusable entries."""
        return {
            "name": self.name,
            "reader": self.reader,
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

    def __str__(self) -> str:
        if not self.problems:
            return f"All {self.total} entries are usable."
        first = "; ".join(self.problems[:SHOW])
        return f"Skipped {self.skipped} of {self.total} unusable entries (first: {first})."
