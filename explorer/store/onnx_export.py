"""Export a checkpoint as one ONNX graph from preprocessed pixels to the answer (no text tower).

Once prompts are learned only the prototypes are needed, so the file holds the image tower (plus
NumCLIP's image adapter), feature normalisation, the stored prototypes and logit scale, the
softmax and the method's point estimate. Contract:

- input ``pixels``: float32 ``(N, 3, S, S)``, already preprocessed; N is dynamic;
- output ``probs``: float32 ``(N, R)`` over the checkpoint's ranks (NumCLIP: its concept bins);
- output ``value``: float32 ``(N,)``, the point estimate in the checkpoint's units: the expectation
  ``probs @ values`` (OrdinalCLIP, CoOp, zero-shot, linear probe) or NumCLIP's regressor output
  with its value offset, exactly ``checkpoint.predictor().predict(feats).value``;
- ``metadata_props`` key ``ordinal_explorer``: JSON with ``format``, ``format_version``,
  ``image_size``, ``mean``, ``std``, ``interpolation`` ("bicubic"), ``resize`` ("shortest"),
  ``crop`` ("center"), ``labels``, ``values``, ``unit``, ``value_kind`` ("expected" or
  "regressed"), ``method``, ``backbone`` ({spec, id}), ``checkpoint`` ({name, content_hash}) and
  ``inputs`` ({kind: faces | whole, cropped, margin}: the crop margin of runs trained on face crops);
  int8 files add ``quantization`` ({kind, fp32_bytes, probe_images, seed, mean_abs_change,
  max_abs_change}): how far int8 weights move ``value`` from the fp32 graph on seeded probe images.

The preprocessing fields are read from the backbone's own ``preprocess`` (a torchvision Compose
built by open_clip); a transform this reader does not know is refused rather than guessed.
:mod:`explorer.predict.onnx_runtime` runs the file with onnxruntime, numpy and Pillow only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.errors import ExplorerError
from explorer.core.fsio import write_bytes
from explorer.data.inputs import checkpoint_inputs
from explorer.methods import canonical_name
from explorer.predict.onnx_runtime import ONNX_FORMAT, ONNX_FORMAT_VERSION, ONNX_META_KEY, _import_onnxruntime, preprocess_image

OPSET = 17
PROBE_IMAGES = 16


class OnnxHead(nn.Module):
    """pixels -> (probs, value): image tower, normalise, [adapter], cosine logits, softmax, estimate."""

    def __init__(self, visual: nn.Module, predictor):
        super().__init__()
        self.visual = visual
        self.register_buffer("matrix", F.normalize(predictor.matrix.detach().float().cpu(), dim=-1))
        self.logit_scale = float(predictor.logit_scale)
        self.adapter = getattr(predictor, "adapter", None)
        self.regressor = getattr(predictor, "regressor", None)
        config = getattr(predictor, "config", None)
        self.ratio = float(getattr(config, "adapter_ratio", 0.0))
        self.offset = float(getattr(config, "value_offset", 0.0))
        self.register_buffer("values", torch.as_tensor(predictor.ranks.value_array, dtype=torch.float32))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = F.normalize(self.visual(pixels).float(), dim=-1)
        if self.adapter is not None:
            feats = F.normalize(self.ratio * self.adapter(feats) + (1 - self.ratio) * feats, dim=-1)
        logits = self.logit_scale * feats @ self.matrix.T
        probs = torch.softmax(logits, dim=-1)
        if self.regressor is not None:
            return probs, self.regressor(logits) + self.offset
        return probs, probs @ self.values


def preprocess_fields(preprocess, image_size: int) -> dict[str, Any]:
    """``image_size, mean, std, interpolation, resize, crop`` of an open_clip eval transform (checked)."""
    from torchvision import transforms as T

    fields: dict[str, Any] = {"image_size": int(image_size), "resize": "shortest", "crop": "center"}
    seen = set()
    for t in getattr(preprocess, "transforms", None) or [preprocess]:
        if isinstance(t, T.Resize):
            size = t.size[0] if isinstance(t.size, (list, tuple)) and len(t.size) == 1 else t.size
            if not isinstance(size, int) or size != image_size or t.max_size is not None:
                raise ExplorerError(f"The backbone's resize ({t}) is not 'shortest side to {image_size}'; it cannot be exported.")
            if t.interpolation != T.InterpolationMode.BICUBIC:
                raise ExplorerError(f"The backbone resizes with {t.interpolation.value}, not bicubic; it cannot be exported.")
            fields["interpolation"] = "bicubic"
        elif isinstance(t, T.CenterCrop):
            if tuple(t.size) != (image_size, image_size):
                raise ExplorerError(f"The backbone's center crop {tuple(t.size)} is not {image_size} x {image_size}.")
        elif isinstance(t, T.Normalize):
            fields["mean"], fields["std"] = [float(x) for x in t.mean], [float(x) for x in t.std]
        elif type(t).__name__ not in ("MaybeConvertMode", "MaybeToTensor", "ToTensor", "function"):
            raise ExplorerError(f"The backbone's preprocessing has a step the ONNX reader does not know ({t}).")
        seen.add(type(t).__name__)
    if not {"Resize", "CenterCrop", "Normalize"} <= seen:
        raise ExplorerError("The backbone's preprocessing is not open_clip's resize / center crop / normalise.")
    return fields


def content_hash(ckpt) -> str:
    """The checkpoint's own content hash, else sha256 of its file."""
    stored = getattr(ckpt, "content_hash", None)
    if stored:
        return str(stored)
    if ckpt.path is None:
        return ""
    return "sha256:" + hashlib.sha256(Path(ckpt.path).read_bytes()).hexdigest()


def onnx_metadata(ckpt, backbone) -> dict[str, Any]:
    """The JSON stored under ``ordinal_explorer`` (see the module docstring)."""
    classes = ckpt.classes
    inputs = checkpoint_inputs(ckpt.meta)
    stored = (ckpt.meta.get("learner") or {}).get("kind") or (ckpt.meta.get("source") or {}).get("learner")
    method = canonical_name(stored) if stored else "prototypes"  # old names resolved
    regressed = getattr(ckpt.predictor(), "regressor", None) is not None
    return {
        "format": ONNX_FORMAT, "format_version": ONNX_FORMAT_VERSION,
        **preprocess_fields(backbone.preprocess, backbone.image_size),
        "labels": list(classes.labels), "values": [float(v) for v in classes.value_array], "unit": ckpt.ranks.unit,
        "value_kind": "regressed" if regressed else "expected", "method": method,
        "backbone": {"spec": ckpt.backbone_spec, "id": ckpt.backbone_id},
        "checkpoint": {"name": ckpt.name, "content_hash": content_hash(ckpt)},
        "inputs": {"kind": inputs["kind"], "cropped": bool(inputs.get("cropped")), "margin": inputs.get("margin")},
    }


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ExplorerError("ONNX export needs the onnx package; install it with "
                            "'pip install ordinalclip-explorer[deploy]' (or 'pip install onnx onnxruntime').") from None
    return onnx


def _check_writable(out: Path) -> None:
    """One sentence before the (slow) export when ``out`` cannot be written."""
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if out.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ExplorerError(f"Cannot write {out}: {folder} is not a writable folder.")


def _load_backbone(ckpt, spec: str | None):
    from explorer.backbones.load import load_backbone

    try:
        backbone = load_backbone(spec or ckpt.backbone_spec, device="cpu")
    except ExplorerError as exc:
        raise ExplorerError(f"Cannot export {ckpt.name}: its backbone {spec or ckpt.backbone_spec} cannot be loaded ({exc})") from None
    ckpt.check_backbone(backbone)
    return backbone


def trace_to_onnx(head: nn.Module, image_size: int, opset: int = OPSET) -> bytes:
    """Serialised ModelProto of ``head`` (TorchScript exporter, dynamic batch axis)."""
    buffer = io.BytesIO()
    dummy = torch.zeros(2, 3, image_size, image_size)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX symbolic
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on open_clip's shape checks
            torch.onnx.export(head.eval(), (dummy,), buffer, input_names=["pixels"], output_names=["probs", "value"],
                              dynamic_axes={"pixels": {0: "N"}, "probs": {0: "N"}, "value": {0: "N"}},
                              opset_version=opset, dynamo=False, do_constant_folding=True, verbose=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return buffer.getvalue()


def quantize_int8(data: bytes) -> bytes:
    """Dynamic int8 weight quantisation (onnxruntime.quantization.quantize_dynamic)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="explorer-quant-") as folder:
        src, dst = Path(folder) / "in.onnx", Path(folder) / "out.onnx"
        src.write_bytes(data)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        return dst.read_bytes()


def probe_images(n: int = PROBE_IMAGES, seed: int = 0) -> list:
    """``n`` seeded synthetic RGB images of mixed sizes: colour gradients plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        w, h = (int(x) for x in rng.integers(48, 320, size=2))
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        slope = rng.normal(0, 120, size=(2, 3))
        arr = rng.random(3) * 255 + xx[..., None] * slope[0] + yy[..., None] * slope[1]
        arr = arr + rng.normal(0, 25, size=(h, w, 3))
        images.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    return images


def quantization_cost(fp32: bytes, int8: bytes, meta: dict[str, Any], probes: int = PROBE_IMAGES,
                      seed: int = 0) -> dict[str, Any]:
    """How far int8 moves ``value``: both graphs (onnxruntime) on the same preprocessed probe images."""
    ort = _import_onnxruntime()
    pixels = np.stack([preprocess_image(im, meta) for im in probe_images(probes, seed)])
    values = [ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(["value"], {"pixels": pixels})[0]
              for data in (fp32, int8)]
    change = np.abs(values[1].astype(np.float64) - values[0].astype(np.float64))
    return {"fp32_bytes": len(fp32), "probe_images": probes, "seed": seed,
            "mean_abs_change": float(change.mean()), "max_abs_change": float(change.max())}


def export_note(path: str | Path) -> str:
    """One line on a written file: its size and, for int8, the fp32 size and the value change it costs."""
    onnx = _require_onnx()
    path = Path(path)
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    meta = json.loads(props.get(ONNX_META_KEY, "{}"))
    size = f"{path.stat().st_size / 1e6:.1f} MB"
    q = meta.get("quantization")
    if not q:
        return f"wrote {path} (ONNX fp32, {size}; image tower + {len(meta.get('labels', []))} prototypes)"
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    return (f"wrote {path} (ONNX int8, {size}; fp32 would be {q['fp32_bytes'] / 1e6:.1f} MB; value changes by "
            f"{q['mean_abs_change']:.3g}{unit} on average (max {q['max_abs_change']:.3g}) on {q['probe_images']} probe images)")


def export_onnx(ckpt, out: str | Path, backbone=None, backbone_spec: str | None = None,
                quantize: str | None = None, opset: int = OPSET) -> Path:
    """Write ``ckpt`` as one ONNX file (see the module docstring) atomically; returns the path."""
    onnx = _require_onnx()
    out = Path(out)
    _check_writable(out)
    if quantize not in (None, "int8"):
        raise ExplorerError(f"Unknown quantisation '{quantize}'; only int8 exists.")
    backbone = backbone or _load_backbone(ckpt, backbone_spec)
    ckpt.check_backbone(backbone)
    meta = onnx_metadata(ckpt, backbone)
    visual = backbone.model.visual.to("cpu").float().eval()
    data = trace_to_onnx(OnnxHead(visual, ckpt.predictor()), backbone.image_size, opset)
    if quantize == "int8":
        fp32, data = data, quantize_int8(data)
        meta["quantization"] = {"kind": "int8 dynamic (weights)", **quantization_cost(fp32, data, meta)}
    model = onnx.load_from_string(data)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta, sort_keys=True)
    model.producer_name = "ordinal-explorer"
    try:
        return write_bytes(out, model.SerializeToString())
    except OSError as exc:
        raise ExplorerError(f"Cannot write {out}: {exc.strerror or exc}.") from None
