"""Predict with an exported ONNX file: onnxruntime, numpy and Pillow only (never imports torch).

The file (written by :func:`explorer.store.onnx_export.export_onnx`) maps preprocessed pixels to the answer:
input ``pixels`` float32 ``(N, 3, S, S)``; outputs ``probs`` ``(N, R)`` and ``value`` ``(N,)``.
Its ``metadata_props`` key ``ordinal_explorer`` holds the JSON that says how to preprocess
(``image_size``, ``mean``, ``std``, ``interpolation`` bicubic, ``resize`` shortest, ``crop``
center) and what the outputs mean (``labels``, ``values``, ``unit``, ``estimate``). This module
reproduces open_clip's eval transform with Pillow: shortest side resized to S (bicubic), center
crop S x S, scaled to [0, 1], normalised by mean / std.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from explorer.core.errors import ExplorerError, one_line
from explorer.core.fileformat import UNKNOWN, file_format
from explorer.core.ranks import Ranks
from explorer.predict.summaries import Prediction, summarize

ONNX_META_KEY = "ordinal_explorer"
ONNX_FORMAT = "ordinal-explorer-onnx"
ONNX_FORMAT_VERSION = 1
ONNX_SUFFIX = ".onnx"

# The "without the explorer at all" snippet of docs/deploy.md (tests/test_deploy.py checks that page
# shows exactly this text; the app shows it beside the download).
SNIPPET = """\
import json, numpy as np, onnxruntime as ort
from PIL import Image

sess = ort.InferenceSession("M.onnx", providers=["CPUExecutionProvider"])
meta = json.loads(sess.get_modelmeta().custom_metadata_map["ordinal_explorer"])
S = meta["image_size"]

def pixels(path):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    scale = S / min(w, h)  # shortest side to S (bicubic), then the center S x S
    im = im.resize((S, int(h * scale)) if w <= h else (int(w * scale), S), Image.BICUBIC)
    left, top = round((im.width - S) / 2), round((im.height - S) / 2)
    x = np.asarray(im.crop((left, top, left + S, top + S)), np.float32) / 255
    return ((x - meta["mean"]) / np.asarray(meta["std"])).transpose(2, 0, 1).astype(np.float32)

probs, value = sess.run(["probs", "value"], {"pixels": np.stack([pixels("face.jpg")])})
print(f"{value[0]:.1f} {meta['unit']}; most likely {meta['labels'][int(probs[0].argmax())]}")
"""


def looks_like_onnx(path: str | Path) -> bool:
    """An ``.onnx`` name, or an unnamed file whose header is no checkpoint format and starts like a
    ModelProto (field 1, ir_version, as a varint: byte 0x08)."""
    path = Path(path)
    if path.suffix.lower() == ONNX_SUFFIX:
        return True
    if not path.is_file():
        return False
    try:
        if file_format(path) != UNKNOWN:
            return False
        with open(path, "rb") as f:
            return f.read(1) == b"\x08"
    except OSError:
        return False


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExplorerError("onnxruntime is not installed; install it with 'pip install ordinalclip-explorer[deploy]' "
                            "(or 'pip install onnxruntime').") from None
    return onnxruntime


@dataclass
class OnnxPredictor:
    """An onnxruntime session of an exported file and its metadata."""

    session: Any
    meta: dict[str, Any]
    path: Path

    @property
    def ranks(self) -> Ranks:
        """What ``probs`` scores: the ranks, or NumCLIP's bins (values in the checkpoint's units)."""
        return Ranks(list(self.meta["labels"]), list(self.meta["values"]), self.meta.get("unit", ""), "rank")

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(N, 3, S, S)`` float32 pixels as the file's metadata describes."""
        return np.stack([preprocess_image(im, self.meta) for im in images]) if images else \
            np.zeros((0, 3, self.meta["image_size"], self.meta["image_size"]), np.float32)

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probs N x R, value N) of preprocessed pixels."""
        probs, value = self.session.run(["probs", "value"], {"pixels": np.ascontiguousarray(pixels, np.float32)})
        return probs, value

    def predict(self, images: Sequence[Image.Image], coverage: float = 0.9) -> Prediction:
        """The same :class:`~explorer.predict.summaries.Prediction` as a checkpoint's predictor gives."""
        probs, value = self.run(self.preprocess(images))
        pred = summarize(probs.astype(np.float64), self.ranks, coverage)
        pred.values, pred.estimate = value.astype(np.float64), self.estimate
        return pred

    @property
    def faces(self) -> bool:
        """Whether the checkpoint it was exported from is a face checkpoint (files of earlier versions say ``kind: faces``)."""
        inputs = self.meta.get("inputs") or {}
        return bool(inputs["faces"]) if "faces" in inputs else inputs.get("kind") == "faces"

    @property
    def estimate(self) -> str:
        """What ``value`` is (files written before the predictor contract say ``value_kind``)."""
        return self.meta.get("estimate") or self.meta.get("value_kind") or "expected"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it, else every core)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def load_onnx(path: str | Path) -> OnnxPredictor:
    """Open an exported file on the CPU, its operators on every core (:func:`usable_cores`); one sentence
    when it is missing, corrupt or not an explorer export."""
    path = Path(path)
    if not path.is_file():
        raise ExplorerError(f"ONNX file not found: {path}.")
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = usable_cores()  # every core (onnxruntime's default counts physical cores only)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unparsable models
        raise ExplorerError(f"{path.name} is not a readable ONNX model (truncated or corrupt: {one_line(exc)}).") from None
    raw = session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
    if raw is None:
        raise ExplorerError(f"{path.name} is an ONNX model but not an explorer export (no '{ONNX_META_KEY}' metadata).")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ExplorerError(f"{path.name} has corrupt explorer metadata ({exc.msg}).") from None
    _check_meta(meta, path.name)
    return OnnxPredictor(session, meta, path)


def _check_meta(meta: dict[str, Any], name: str) -> None:
    """One sentence for metadata this reader cannot follow."""
    if meta.get("format") != ONNX_FORMAT or meta.get("format_version") != ONNX_FORMAT_VERSION:
        raise ExplorerError(f"{name} has explorer metadata of format {meta.get('format')} v{meta.get('format_version')}; "
                            f"this explorer reads {ONNX_FORMAT} v{ONNX_FORMAT_VERSION}.")
    for key, want in (("interpolation", "bicubic"), ("resize", "shortest"), ("crop", "center")):
        if meta.get(key) != want:
            raise ExplorerError(f"{name} asks for {key} '{meta.get(key)}'; only '{want}' is implemented.")


def preprocess_image(image: Image.Image, meta: dict[str, Any]) -> np.ndarray:
    """open_clip's eval transform in Pillow + numpy: resize shortest side, center crop, scale, normalise."""
    size = int(meta["image_size"])
    image = image.convert("RGB")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)  # torchvision's rounding
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    arr = np.asarray(image, dtype=np.float32) / 255.0
    mean, std = np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32)
    return ((arr - mean) / std).transpose(2, 0, 1).astype(np.float32)
