"""Export a checkpoint as one ONNX graph from preprocessed pixels to the answer (no text tower).

Once prompts are learned only the image side is needed: the file holds the image tower and the
checkpoint predictor's own export module (:meth:`explorer.predict.contract.Predictor.export_module`:
image features -> probs and value; the prototype head, NumCLIP's adapter + regressor, or a plug-in
method's own), traced as they are. A predictor without an export module is refused in one
sentence. Contract:

- input ``pixels``: float32 ``(N, 3, S, S)``, already preprocessed; N is dynamic;
- output ``probs``: float32 ``(N, K)`` over the checkpoint's classes (its ranks, or NumCLIP's bins);
- output ``value``: float32 ``(N,)``, the method's point estimate in the checkpoint's units, exactly
  ``checkpoint.predictor().predict(feats).value`` (``estimate`` names it);
- ``metadata_props`` key ``ordinal_explorer``: JSON with ``format``, ``format_version``,
  ``image_size``, ``mean``, ``std``, ``interpolation`` ("bicubic"), ``resize`` ("shortest"),
  ``crop`` ("center"), ``labels``, ``values``, ``unit``, ``estimate`` ("expected", "regressed",
  "median", ...: the predictor's), ``method``, ``backbone`` ({spec, id}), ``checkpoint`` ({name,
  content_hash}) and ``inputs`` ({faces, cropped, margin}: the crop margin of runs trained on face
  crops); int8 files add ``quantization`` ({scheme, fp32_bytes, probe_images, seed, mean_abs_change,
  max_abs_change}): how far int8 weights move ``value`` from the fp32 graph on seeded probe images.

The preprocessing fields are read from the backbone's own ``preprocess`` (a torchvision Compose
built by open_clip); a transform this reader does not know is refused rather than guessed. The
backbone is never changed: a tower that is not already on the CPU in float32 is copied first.
:mod:`explorer.predict.onnx_runtime` runs the file with onnxruntime, numpy and Pillow only.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from explorer.core.errors import ExplorerError
from explorer.core.fsio import write_bytes
from explorer.data.inputs import checkpoint_inputs
from explorer.predict.contract import export_module_of
from explorer.predict.onnx_runtime import ONNX_FORMAT, ONNX_FORMAT_VERSION, ONNX_META_KEY, import_onnxruntime, preprocess_image

OPSET = 17
PROBE_IMAGES = 16


class OnnxGraph(nn.Module):
    """pixels -> (probs, value): the image tower, then the predictor's export module."""

    def __init__(self, visual: nn.Module, head: nn.Module):
        super().__init__()
        self.visual, self.head = visual, head

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, value = self.head(self.visual(pixels).float())
        return probs, value


def cpu_float_tower(visual: nn.Module) -> nn.Module:
    """``visual`` itself when it is on the CPU in float32 and in eval mode, else a CPU float32 eval copy
    (the caller's module, e.g. a pooled backbone's tower on CUDA, is never moved or changed)."""
    tensors = list(visual.parameters()) + list(visual.buffers())
    if all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors) \
            and not any(m.training for m in visual.modules()):
        return visual
    return copy.deepcopy(visual).to("cpu", torch.float32).eval()


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
    return {
        "format": ONNX_FORMAT, "format_version": ONNX_FORMAT_VERSION,
        **preprocess_fields(backbone.preprocess, backbone.image_size),
        "labels": list(classes.labels), "values": [float(v) for v in classes.value_array], "unit": ckpt.ranks.unit,
        "estimate": ckpt.predictor().estimate, "method": ckpt.method_name or "prototypes",
        "backbone": {"spec": ckpt.backbone_spec, "id": ckpt.backbone_id},
        "checkpoint": {"name": ckpt.name, "content_hash": content_hash(ckpt)},
        "inputs": {"faces": inputs["faces"], "cropped": bool(inputs.get("cropped")), "margin": inputs.get("margin")},
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
    ort = import_onnxruntime()
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
    head = export_module_of(ckpt.predictor(), ckpt.name)
    data = trace_to_onnx(OnnxGraph(cpu_float_tower(backbone.model.visual), head), backbone.image_size, opset)
    if quantize == "int8":
        fp32, data = data, quantize_int8(data)
        meta["quantization"] = {"scheme": "int8 dynamic (weights)", **quantization_cost(fp32, data, meta)}
    model = onnx.load_from_string(data)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta, sort_keys=True)
    model.producer_name = "ordinal-explorer"
    try:
        return write_bytes(out, model.SerializeToString())
    except OSError as exc:
        raise ExplorerError(f"Cannot write {out}: {exc.strerror or exc}.") from None
