"""Faces: find them, crop one with a margin, draw them on a preview.

Detection runs YuNet (libfacedetection's CNN, Apache-2.0; the ONNX file ships in
``explorer/assets/yunet/``, see NOTICE) with OpenCV's ``cv2.FaceDetectorYN``: the same detector on
every platform and Python, nothing downloaded at run time. It runs on a copy whose longer side is
at most ``DETECT_SIDE`` pixels (small images are enlarged to ``MIN_SIDE``); boxes are mapped back to
the original. Each :class:`Face` has a box, a confidence score and five landmarks; faces under
``MIN_SCORE`` are dropped. :func:`crop_face` uses the largest face unless ``face_index`` picks
another; its box is grown by ``margin`` (a fraction of the face size on every side), made square
when the image allows, and clipped to the image. When no face is found the whole image is used and
:class:`FaceCrop` says so (``found`` is False). Datasets crop with the same function
(``Dataset.model_input``) and so do uploads (:mod:`explorer.predict.uploads`), so training,
evaluation and Predict see the same kind of sample.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from explorer.core.errors import ExplorerError
from explorer.core.settings import face_threads
from explorer.data.inputs import DEFAULT_MARGIN

DETECT_SIDE = 640  # detection runs on a copy whose longer side is at most this
MIN_SIDE = 160  # ... and at least this (tiny crops are enlarged: the detector likes some pixels)
MIN_SCORE = 0.7  # faces scored below are dropped: true faces score >= 0.81, false ones <= 0.57 (bench_faces.py)
NMS_THRESHOLD = 0.3
MODEL_FILE = Path(__file__).resolve().parents[1] / "assets" / "yunet" / "yunet_n_dynamic.onnx"

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive), original-image pixels

_local = threading.local()  # one detector per thread: cv2 detectors keep per-call state
_threads_lock = threading.Lock()
_threads_set = False


@dataclass(frozen=True)
class Face:
    """One detected face: its box (original pixels), confidence in [0, 1] and five landmarks
    (right eye, left eye, nose tip, right and left mouth corners, as seen in the image)."""

    box: Box
    score: float
    landmarks: tuple[tuple[int, int], ...] = ()

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


def _set_cv2_threads(cv2) -> None:
    """OpenCV's own thread pool: ``ORDINAL_EXPLORER_FACE_THREADS`` (default 1), so detection never
    competes with the torch encoder for cores. Set once; the environment is only read."""
    global _threads_set
    with _threads_lock:
        if not _threads_set:
            cv2.setNumThreads(face_threads())
            with contextlib.suppress(AttributeError):  # OpenCV 5 warns that its new engine ignores targets
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
            _threads_set = True


def _detector():
    """This thread's ``cv2.FaceDetectorYN`` over the bundled model (made on first use)."""
    detector = getattr(_local, "detector", None)
    if detector is None:
        import cv2

        _set_cv2_threads(cv2)
        if not MODEL_FILE.is_file():
            raise ExplorerError(f"The face detector's model file is missing ({MODEL_FILE}); reinstall the package.")
        # score threshold 0.3 here, MIN_SCORE (or the caller's) after: callers may ask for lower scores
        detector = cv2.FaceDetectorYN.create(str(MODEL_FILE), "", (MIN_SIDE, MIN_SIDE), 0.3, NMS_THRESHOLD, 5000)
        _local.detector = detector
    return detector


def _detection_copy(image: Image.Image) -> tuple[np.ndarray, float]:
    """A BGR uint8 array of ``image`` scaled so its longer side lies in [MIN_SIDE, DETECT_SIDE]."""
    rgb = image.convert("RGB")
    longer = max(rgb.size)
    scale = min(1.0, DETECT_SIDE / longer) if longer >= MIN_SIDE else MIN_SIDE / longer
    if scale != 1.0:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]), scale


def detect_faces(image: Image.Image, min_score: float = MIN_SCORE) -> list[Face]:
    """Faces in ``image`` (any PIL mode) scored at least ``min_score``, largest first; empty when none."""
    detector = _detector()
    bgr, scale = _detection_copy(image)
    detector.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, rows = detector.detect(bgr)
    width, height = image.size
    found = []
    for row in rows if rows is not None else ():
        x, y, w, h = (float(v) for v in row[:4])
        score = float(row[14])
        if score < min_score or w <= 0 or h <= 0:
            continue
        box = (max(0, round(x / scale)), max(0, round(y / scale)),
               min(width, round((x + w) / scale)), min(height, round((y + h) / scale)))
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        points = tuple((round(float(row[i]) / scale), round(float(row[i + 1]) / scale)) for i in range(4, 14, 2))
        found.append(Face(box, round(score, 4), points))
    found.sort(key=lambda f: (f.area, f.score), reverse=True)
    return found


CROP_ID = f"yunet-n/{MIN_SCORE}/{DETECT_SIDE}/{MIN_SIDE}"  # part of the feature cache key of face crops


def faces_sentence(found: Sequence[bool | None]) -> str:
    """``faces found in 57 of 60 images; 3 used whole`` ('' when the images were not cropped)."""
    flags = [f for f in found if f is not None]
    if not flags:
        return ""
    hits = sum(flags)
    missing = len(flags) - hits
    return f"faces found in {hits} of {len(flags)} images" + (f"; {missing} used whole" if missing else "")


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
    """What the model sees (``image``) and where it came from: every face found (``faces``, largest
    first) and which one was used (``face_index``)."""

    image: Image.Image
    found: bool
    faces: list[Face] = field(default_factory=list)
    face_index: int | None = None  # position in ``faces`` of the face used
    crop_box: Box | None = None  # the region used (face + margin); None when the whole image is used
    whole_image_requested: bool = False

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    @property
    def face(self) -> Face | None:
        """The face used (None when the whole image is)."""
        return None if self.face_index is None else self.faces[self.face_index]

    @property
    def face_box(self) -> Box | None:
        return self.face.box if self.face else None

    @property
    def score(self) -> float | None:
        return self.face.score if self.face else None

    def face_label(self, index: int) -> str:
        """``Face 2 of 3 (score 0.91)``, with "largest" for the first: for a picker."""
        largest = ", largest" if index == 0 and self.num_faces > 1 else ""
        return f"Face {index + 1} of {self.num_faces} (score {self.faces[index].score:.2f}{largest})"

    def summary(self) -> dict[str, Any]:
        """``{found, box, score}`` of the face used, for JSON output (box None when none)."""
        return {"found": self.found, "box": list(self.face_box) if self.face_box else None, "score": self.score}

    @property
    def note(self) -> str:
        """One sentence for the page."""
        if self.whole_image_requested:
            return "Whole image used (face cropping switched off)."
        if not self.found:
            return "No face found: the whole image is used."
        if self.num_faces == 1:
            return f"Face found (score {self.score:.2f}): the crop around it is used."
        which = "the largest" if self.face_index == 0 else f"face {self.face_index + 1}"
        return f"{self.num_faces} faces found: the crop around {which} (score {self.score:.2f}) is used."


def crop_face(image: Image.Image, margin: float = DEFAULT_MARGIN, use_whole_image: bool = False,
              face_index: int | None = None, faces: Sequence[Face] | None = None) -> FaceCrop:
    """Crop a face (plus margin) or fall back to the whole image.

    ``face_index``: which of the faces (largest first) to use; None (or out of range) uses the
    largest. ``faces``: detections of this image made before (skips detecting again).
    """
    if use_whole_image:
        return FaceCrop(image, found=False, whole_image_requested=True)
    found = list(detect_faces(image) if faces is None else faces)
    if not found:
        return FaceCrop(image, found=False)
    index = face_index if face_index is not None and 0 <= face_index < len(found) else 0
    crop_box = expand_box(found[index].box, image.size, margin)
    return FaceCrop(image.crop(crop_box), found=True, faces=found, face_index=index, crop_box=crop_box)


def annotate(image: Image.Image, crop: FaceCrop, max_side: int = 512) -> Image.Image:
    """A preview: the image (downscaled to ``max_side``) with every face numbered (the one used in
    green, others in blue), the five landmarks of the face used (eyes, nose, mouth corners) and the crop (yellow)."""
    scale = min(1.0, max_side / max(image.size))
    preview = image.convert("RGB")
    if scale < 1.0:
        preview = preview.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    else:
        preview = preview.copy()
    draw = ImageDraw.Draw(preview)
    width = max(2, round(max(preview.size) / 150))
    font = ImageFont.load_default(size=max(12, 7 * width))
    boxes = [(crop.crop_box, (250, 200, 0), None)] if crop.crop_box else []
    boxes += [(f.box, (0, 200, 80) if i == crop.face_index else (40, 140, 255), i + 1) for i, f in enumerate(crop.faces)]
    for box, colour, number in boxes:
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=width)
        if number is not None and crop.num_faces > 1:
            draw.text((x0 + width + 2, y0 + width), str(number), fill=colour, font=font)
    if crop.face_index is not None and crop.faces:
        for x, y in crop.faces[crop.face_index].landmarks:
            draw.ellipse([x * scale - width, y * scale - width, x * scale + width, y * scale + width], fill=(0, 200, 80))
    return preview
