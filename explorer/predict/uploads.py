"""Uploaded images to rank distributions (the Predict and Compare pages): decode the bytes, crop the
face (the largest, or the one picked), encode with the backbone, predict with a checkpoint's predictor.

Decoding goes through :func:`explorer.data.images.open_image` (EXIF, modes, size limit, friendly
errors) and cropping through :func:`explorer.data.faces.crop_face`, as for datasets. A bad file never
stops the others: it comes back with its one-sentence error. Nothing here takes a lock: whoever
shares the backbone holds it around :func:`predict_uploads` and :func:`overlay_distributions` (the
app: ``with handle.use() as backbone:``); decoding and cropping need no backbone and run outside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from explorer.core.errors import ExplorerError
from explorer.data.faces import FaceCrop, crop_face
from explorer.data.images import MAX_PIXELS, open_image
from explorer.data.inputs import DEFAULT_MARGIN


@dataclass
class PreparedImage:
    """One uploaded file after decoding and cropping (``error`` set instead when it is unusable)."""

    name: str
    image: Image.Image | None = None
    crop: FaceCrop | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def prepare_upload(
    data: bytes, name: str, *, use_whole_image: bool = False, margin: float = DEFAULT_MARGIN, max_pixels: int = MAX_PIXELS,
    face_index: int | None = None,
) -> PreparedImage:
    """Decode uploaded bytes (friendly error for empty / non-image / too large) and crop the face
    (the largest, or ``face_index`` among those found)."""
    try:
        image = open_image(data, name=name, max_pixels=max_pixels)
        crop = crop_face(image, margin=margin, use_whole_image=use_whole_image, face_index=face_index)
        return PreparedImage(name, image, crop)
    except ExplorerError as exc:
        return PreparedImage(name, error=str(exc))


def prepare_uploads(
    uploads: Iterable[tuple[str, bytes]], *, use_whole_image: bool = False, margin: float = DEFAULT_MARGIN,
    max_pixels: int = MAX_PIXELS, face_choices: Mapping[int, int] | None = None,
) -> list[PreparedImage]:
    """:func:`prepare_upload` of every ``(name, bytes)``; ``face_choices``: upload position -> which face
    to use there (largest first); the others use the largest."""
    choices = dict(face_choices or {})
    return [prepare_upload(data, name, use_whole_image=use_whole_image, margin=margin, max_pixels=max_pixels,
                           face_index=choices.get(pos)) for pos, (name, data) in enumerate(uploads)]


@dataclass
class UploadPrediction:
    """Prepared images and, for the usable ones, their rank distributions (``record`` per image)."""

    items: list[PreparedImage]
    prediction: Any = None  # explorer.predict.prototypes.Prediction over the usable items, in order
    index: dict[int, int] = field(default_factory=dict)  # item position -> prediction row

    @property
    def errors(self) -> list[tuple[str, str]]:
        return [(it.name, it.error or "") for it in self.items if not it.ok]

    def record(self, position: int) -> dict[str, Any] | None:
        """The prediction summary of item ``position`` (None for a failed item)."""
        row = self.index.get(position)
        return None if row is None else self.prediction.record(row)

    def probs(self, position: int) -> np.ndarray | None:
        row = self.index.get(position)
        return None if row is None else self.prediction.probs[row]

    def table(self):
        """pandas DataFrame: one row per file (failed files keep their error message)."""
        import pandas as pd

        rows = []
        for pos, item in enumerate(self.items):
            rec = self.record(pos)
            if rec is None:
                rows.append({"image": item.name, "error": item.error})
                continue
            lo, hi = rec["interval_values"]
            rows.append({
                "image": item.name,
                "face": "yes" if item.crop and item.crop.found else "no (whole image)",
                "faces found": item.crop.num_faces if item.crop else 0,
                "expected": round(rec["value"], 3),  # the method's point estimate (NumCLIP: the regressed value)
                "argmax": rec["argmax_label"],
                "median": rec["median_value"],
                f"{rec['coverage'] * 100:.0f}% low": lo,
                f"{rec['coverage'] * 100:.0f}% high": hi,
                "top probability": round(rec["top"][0]["prob"], 4),
                "unit": rec["unit"],
                "error": "",
            })
        return pd.DataFrame(rows)

    def csv(self) -> bytes:
        """The table as UTF-8 CSV."""
        return self.table().to_csv(index=False).encode("utf-8")


def predict_uploads(items: Sequence[PreparedImage], predictor, backbone, *, coverage: float = 0.9) -> UploadPrediction:
    """Encode the usable ``items`` with ``backbone`` (one batch) and predict them with ``predictor``
    (a checkpoint's ``predictor()``); failed items keep their error."""
    items = list(items)
    usable = [pos for pos, it in enumerate(items) if it.ok]
    result = UploadPrediction(items)
    if not usable:
        return result
    feats = backbone.encode_images([items[pos].crop.image for pos in usable])
    result.prediction = predictor.predict(feats, coverage=coverage)
    result.index = {pos: row for row, pos in enumerate(usable)}
    return result


def overlay_distributions(image: Image.Image, predictors: Sequence[tuple[Any, Any]], backbone,
                          coverage: float = 0.9) -> list[tuple[Any, Any]]:
    """One (already cropped) image through several checkpoints' predictors on one backbone, encoded
    once: ``(key, predictor)`` pairs in, ``(key, Prediction)`` pairs out, in order."""
    feats = backbone.encode_images([image])
    return [(key, predictor.predict(feats, coverage=coverage)) for key, predictor in predictors]
