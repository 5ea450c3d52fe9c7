"""Faces and uploaded photos: find the largest face, crop it with a margin, predict from uploads.

Detection uses OpenCV's bundled Haar cascade (``cv2.data.haarcascades`` +
``haarcascade_frontalface_default.xml``) on a grey, histogram-equalised copy downscaled to at
most ``DETECT_SIDE`` pixels (fast on any photo size; boxes are mapped back to the original).
The largest face wins; its box is grown by ``margin`` (a fraction of the face size on every
side), made square when the image allows, and clipped to the image. When no face is found the
whole image is used and :class:`FaceCrop` says so (``found`` is False).

The upload pipeline (:func:`prepare_upload`, :func:`predict_uploads`) turns raw bytes into
rank distributions: decode with :func:`explorer.images.open_image` (EXIF, modes, size limit,
friendly errors), crop, encode with the backbone, predict with the prototypes. A bad file
never stops the others: it comes back with its one-sentence error.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .errors import ExplorerError
from .images import MAX_PIXELS, open_image

CASCADE_FILE = "haarcascade_frontalface_default.xml"
DETECT_SIDE = 640  # detection runs on a copy whose longer side is at most this
DEFAULT_MARGIN = 0.4

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive), original-image pixels

_local = threading.local()


def _cascade():
    """One CascadeClassifier per thread (OpenCV does not promise thread safety for one instance)."""
    cascade = getattr(_local, "cascade", None)
    if cascade is None:
        try:
            import cv2
        except ImportError as exc:  # pragma: no cover - dependency is declared
            raise ExplorerError("Face detection needs OpenCV; install opencv-python-headless.") from exc
        path = getattr(getattr(cv2, "data", None), "haarcascades", "") + CASCADE_FILE
        if not hasattr(cv2, "CascadeClassifier"):
            raise ExplorerError(
                f"This OpenCV ({cv2.__version__}) has no Haar cascade detector; install opencv-python-headless 4.x."
            )
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise ExplorerError(f"OpenCV's face detector file {CASCADE_FILE} could not be loaded from {path}.")
        _local.cascade = cascade
    return cascade


def detect_faces(image: Image.Image, min_neighbors: int = 4, min_size_frac: float = 0.06) -> list[Box]:
    """Face boxes in ``image`` (any PIL mode), largest first; empty when none is found.

    ``min_size_frac``: the smallest face side searched for, as a fraction of the shorter image side.
    """
    import cv2

    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = min(1.0, DETECT_SIDE / max(width, height))
    small = rgb if scale == 1.0 else rgb.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    grey = cv2.equalizeHist(cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2GRAY))
    side = max(20, int(min(grey.shape) * min_size_frac))
    found = _cascade().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=int(min_neighbors), minSize=(side, side))
    boxes: list[Box] = []
    for x, y, w, h in (found if len(found) else []):
        x0, y0 = int(round(x / scale)), int(round(y / scale))
        x1, y1 = int(round((x + w) / scale)), int(round((y + h) / scale))
        boxes.append((max(0, x0), max(0, y0), min(width, x1), min(height, y1)))
    boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
    return boxes


def expand_box(box: Box, size: tuple[int, int], margin: float = DEFAULT_MARGIN) -> Box:
    """``box`` grown by ``margin`` x its size on every side, squared around its centre, clipped to ``size``."""
    if margin < 0:
        raise ExplorerError(f"The face margin must be 0 or more (got {margin}).")
    width, height = size
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = min(side, width, height)
    half = side / 2
    # shift the square inside the image rather than cutting it
    left = min(max(cx - half, 0), width - side)
    top = min(max(cy - half, 0), height - side)
    return (int(round(left)), int(round(top)), int(round(left + side)), int(round(top + side)))


@dataclass
class FaceCrop:
    """What the model sees (``image``) and where it came from."""

    image: Image.Image
    found: bool
    num_faces: int = 0
    face_box: Box | None = None  # the detected face, original pixels
    crop_box: Box | None = None  # the region used (face + margin); None when the whole image is used
    whole_image_requested: bool = False

    @property
    def note(self) -> str:
        """One sentence for the page."""
        if self.whole_image_requested:
            return "Whole image used (face cropping switched off)."
        if not self.found:
            return "No face found: the whole image is used."
        extra = f" (largest of {self.num_faces})" if self.num_faces > 1 else ""
        return f"Face found{extra}: the crop around it is used."


def crop_face(image: Image.Image, margin: float = DEFAULT_MARGIN, use_whole_image: bool = False) -> FaceCrop:
    """Crop the largest face (plus margin) or fall back to the whole image."""
    if use_whole_image:
        return FaceCrop(image, found=False, whole_image_requested=True)
    boxes = detect_faces(image)
    if not boxes:
        return FaceCrop(image, found=False)
    crop_box = expand_box(boxes[0], image.size, margin)
    return FaceCrop(image.crop(crop_box), found=True, num_faces=len(boxes), face_box=boxes[0], crop_box=crop_box)


def annotate(image: Image.Image, crop: FaceCrop, max_side: int = 512) -> Image.Image:
    """A preview: the image (downscaled to ``max_side``) with the face box (green) and crop (yellow)."""
    scale = min(1.0, max_side / max(image.size))
    preview = image.convert("RGB")
    if scale < 1.0:
        preview = preview.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    else:
        preview = preview.copy()
    draw = ImageDraw.Draw(preview)
    width = max(2, round(max(preview.size) / 150))
    for box, colour in ((crop.crop_box, (250, 200, 0)), (crop.face_box, (0, 200, 80))):
        if box:
            x0, y0, x1, y1 = (v * scale for v in box)
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=width)
    return preview


# --- uploads -> predictions ---------------------------------------------------------------------


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
    data: bytes, name: str, *, use_whole_image: bool = False, margin: float = DEFAULT_MARGIN, max_pixels: int = MAX_PIXELS
) -> PreparedImage:
    """Decode uploaded bytes (friendly error for empty / non-image / too large) and crop the face."""
    try:
        image = open_image(data, name=name, max_pixels=max_pixels)
        return PreparedImage(name, image, crop_face(image, margin=margin, use_whole_image=use_whole_image))
    except ExplorerError as exc:
        return PreparedImage(name, error=str(exc))


@dataclass
class UploadPrediction:
    """Prepared images and, for the usable ones, their rank distributions (``record`` per image)."""

    items: list[PreparedImage]
    prediction: Any = None  # explorer.prototypes.Prediction over the usable items, in order
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


def predict_uploads(
    uploads: Iterable[tuple[str, bytes]],
    prototypes,
    backbone,
    *,
    use_whole_image: bool = False,
    margin: float = DEFAULT_MARGIN,
    coverage: float = 0.9,
    lock: Any = None,
    max_pixels: int = MAX_PIXELS,
) -> UploadPrediction:
    """Decode, crop, encode (holding ``lock`` if given) and predict every upload ``(name, bytes)``."""
    items = [prepare_upload(data, name, use_whole_image=use_whole_image, margin=margin, max_pixels=max_pixels)
             for name, data in uploads]
    usable = [pos for pos, it in enumerate(items) if it.ok]
    result = UploadPrediction(items)
    if not usable:
        return result
    with lock if lock is not None else contextlib.nullcontext():
        feats = backbone.encode_images([items[pos].crop.image for pos in usable])
    result.prediction = prototypes.predict(feats, coverage=coverage)
    result.index = {pos: row for row, pos in enumerate(usable)}
    return result


def overlay_distributions(image: Image.Image, models: Sequence[tuple[str, Any, Any]], coverage: float = 0.9,
                          lock_for=None) -> list[tuple[str, Any]]:
    """Predict one (already cropped) image with several ``(name, prototypes, backbone)``; returns
    ``(name, Prediction)`` pairs. ``lock_for(backbone)`` may give the lock to hold while encoding."""
    out = []
    feats_by_backbone: dict[int, Any] = {}
    for name, protos, backbone in models:
        key = id(backbone)
        if key not in feats_by_backbone:
            lock = lock_for(backbone) if lock_for else None
            with lock if lock is not None else contextlib.nullcontext():
                feats_by_backbone[key] = backbone.encode_images([image])
        out.append((name, protos.predict(feats_by_backbone[key], coverage=coverage)))
    return out
