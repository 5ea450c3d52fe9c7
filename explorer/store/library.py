"""The checkpoint library: describe every file of a folder (usable or not), and cache analyses.

- :func:`inspect_entry` never raises: every ``.safetensors``, ``.pt``,
  ``.pth``, ``.ckpt`` and ``.bin`` file becomes a :class:`LibraryEntry` whose ``status`` is
  ``"ok"`` (an explorer checkpoint), ``"not_checkpoint"`` (e.g. backbone weights: a safetensors
  file without the ``ordinalclip_explorer`` metadata key, or a torch pickle, which is never
  unpickled) or ``"error"`` (corrupt, wrong format, invalid contents), with a one-sentence reason.
- :func:`store_upload` keeps an uploaded file under the cache folder, named by its content hash.
- :func:`geometry_summary` bundles the similarity views, ordinality and violations of one
  prototype matrix (UMAP / t-SNE layouts are kept on disk by
  :func:`explorer.analysis.projections.cached_projection`, so a restart does not pay numba's warm-up again).
- Checkpoints are identified by a content hash (BLAKE2b of the file bytes): analyses keyed by it
  stay valid whatever the file is called and are recomputed when the bytes change.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explorer.backbones.catalog import backbone_status
from explorer.backbones.spec import META_KEY
from explorer.backbones.torchfiles import SAFE_PICKLE_PREFIXES, pickle_globals
from explorer.core.errors import ExplorerError, TransientError, is_out_of_memory, one_line
from explorer.core.fileformat import MAX_HEADER_BYTES, file_format, is_torch_pickle
from explorer.core.fsio import bytes_digest, file_digest, safe_filename, write_bytes
from explorer.core.settings import cache_folder
from explorer.store.resume import RESUME_KEY, describe_resume, read_resume_meta

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


@dataclass
class LibraryEntry:
    """One file of the library (or one the user added) with what the Library page shows."""

    path: Path
    status: str  # "ok" | "resume" (a run's resume state) | "not_checkpoint" | "error"
    message: str = ""
    content_hash: str = ""
    source: str = "library"  # "library" | "added"
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    ordinality: float | None = None
    violation_rate: float | None = None
    backbone_ok: bool | None = None
    backbone_note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def key(self) -> str:
        """Stable identifier for widgets: the absolute path."""
        return str(self.path)

    @property
    def name(self) -> str:
        return self.summary.get("name") or self.path.stem

    @property
    def backbone_spec(self) -> str:
        return (self.summary.get("backbone") or {}).get("spec", "")

    @property
    def method(self) -> str:
        """The method's name (ordinalclip, coop, ...), with "(prototypes)" for a prototype-only export."""
        method = self.summary.get("method") or ""
        if self.summary.get("content") == "prototypes":
            return f"{method} (prototypes)" if method else "prototypes"
        return method

    @property
    def num_ranks(self) -> int | None:
        return self.summary.get("num_ranks")

    @property
    def num_classes(self) -> int | None:
        """Rows of the prototype matrix: the ranks, or a binned method's bins."""
        return self.summary.get("num_classes", self.num_ranks)

    def offers(self, capability: str) -> bool:
        """Whether the checkpoint's method implements the hooks of ``capability`` ("decode", "lab"): stored in
        the summary when the file was inspected (so asking imports no method and no torch), computed for older listings."""
        stored = self.summary.get("offers")
        return capability in (_offers(self.summary) if stored is None else stored)

    def row(self) -> dict[str, Any]:
        """A flat table row (the Library table)."""
        km = key_metrics(self.metrics)
        status = {"ok": "ok", "resume": "resume state", "not_checkpoint": "not a checkpoint", "error": "error"}[self.status]
        note = self.message
        if self.ok and self.backbone_ok is False:
            status, note = "backbone missing", self.backbone_note
        return {
            "name": self.name,
            "file": self.path.name,
            "status": status,
            "content": self.summary.get("content", ""),
            "method": self.method,
            "backbone": self.backbone_spec,
            "interpolation": _interp_text(self.summary),
            "ranks": self.num_ranks,
            "range": self.summary.get("ranks", ""),
            "MAE": km.get("mae_value", km.get("mae_exp")),
            "accuracy %": None if km.get("acc_max") is None else 100 * km["acc_max"],
            "metrics on": km.get("split", ""),
            "ordinality %": None if self.ordinality is None else 100 * self.ordinality,
            "violations %": None if self.violation_rate is None else 100 * self.violation_rate,
            "note": note,
            "source": self.source,
        }


def _interp_text(summary: dict[str, Any]) -> str:
    """The method's note for the Library table: stored in the summary when the file was inspected (so
    the listing, read from its cache, imports no method and no torch); computed for older listings."""
    if "library_note" in summary:
        return summary["library_note"]
    return _library_note(summary)


def _offers(summary: dict[str, Any]) -> list[str]:
    """The capabilities (explorer.methods.hooks) the method of a full checkpoint implements."""
    if summary.get("content") != "full":
        return []
    from explorer.methods import find_method
    from explorer.methods.hooks import CAPABILITIES, offers

    method = find_method(summary.get("method"))
    return [c for c in CAPABILITIES if offers(method, c)]


def _library_note(summary: dict[str, Any]) -> str:
    if summary.get("content") != "full":
        return ""
    from explorer.methods import find_method

    method = find_method(summary.get("method"))
    return method.library_note(summary) if method is not None else ""


# --- metrics stored in checkpoint metadata --------------------------------------------------------


def _split_metrics(metrics: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """(split, metric dict): the test split when present, else val, else a flat metric dict."""
    if not isinstance(metrics, dict) or not metrics:
        return None
    for split in ("test", "val"):
        if isinstance(metrics.get(split), dict) and metrics[split]:
            return split, metrics[split]
    if any(isinstance(v, (int, float)) for v in metrics.values()) or "per_rank_mae" in metrics:
        return "", metrics
    return None


def key_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """Headline numbers of checkpoint ``metrics`` metadata: ``split`` plus every scalar metric."""
    found = _split_metrics(metrics)
    if found is None:
        return {}
    split, values = found
    out: dict[str, Any] = {"split": split}
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def per_rank_mae(metrics: dict[str, Any] | None) -> tuple[str, list[float | None]] | None:
    """(split, per-rank MAE list with None for ranks without examples) when the metadata has it."""
    found = _split_metrics(metrics)
    if found is None:
        return None
    split, values = found
    per_rank = values.get("per_rank_mae")
    if not isinstance(per_rank, list) or not per_rank:
        return None
    return split, [None if v is None else float(v) for v in per_rank]


# --- inspecting files --------------------------------------------------------------------------------


def _safetensors_metadata(path: Path) -> dict[str, str] | None:
    """The ``__metadata__`` of a safetensors header without reading tensors; raises ExplorerError if unreadable."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ExplorerError(f"{path.name} is too short to be a safetensors file (truncated or empty).")
        (length,) = struct.unpack("<Q", head)
        if length <= 1 or length > MAX_HEADER_BYTES:
            raise ExplorerError(f"{path.name} is not a safetensors file (its header length is implausible).")
        raw = f.read(length)
    if len(raw) < length:
        raise ExplorerError(f"{path.name} is truncated (its safetensors header is incomplete).")
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExplorerError(f"{path.name} is not a safetensors file (its header is not JSON).") from exc
    if not isinstance(header, dict):
        raise ExplorerError(f"{path.name} is not a safetensors file (unexpected header).")
    meta = header.get("__metadata__")
    return meta if isinstance(meta, dict) else None


def classify_file(path: str | Path) -> tuple[str, str]:
    """Cheap first look: ``("checkpoint", "")``, ``("resume", what)``, ``("not_checkpoint", why)`` or ``("error", why)``;
    TransientError when the file cannot be read now (not its own fault)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "error", f"{path.name} is empty (0 bytes)."
        if is_torch_pickle(file_format(path)):
            risky = [g for g in pickle_globals(path) if not g.startswith(SAFE_PICKLE_PREFIXES)]
            if risky:
                return "error", (
                    f"{path.name} is a pickle that would import and call {', '.join(risky[:3])} when loaded, "
                    "so it could run code; it was not opened."
                )
            return "not_checkpoint", (
                f"{path.name} is a torch pickle; pickles are never loaded here because unpickling can run code "
                "(reference OrdinalCLIP runs can be converted with 'ordinal-explorer import-reference')."
            )
        meta = _safetensors_metadata(path)
    except ExplorerError as exc:
        if path.suffix != ".safetensors":
            return "not_checkpoint", f"{path.name} is neither a safetensors checkpoint nor a torch file."
        return "error", str(exc)
    except OSError as exc:
        raise TransientError(f"{path.name} cannot be read now ({exc.strerror or exc}).") from exc
    if meta and RESUME_KEY in meta and META_KEY not in meta:
        info = describe_resume(read_resume_meta(meta[RESUME_KEY], path), path)
        return "resume", (
            f"Resume state of run {info['run']} after epoch {info['epochs_done']} of {info['epochs']} "
            f"(its checkpoint is {Path(info['checkpoint']).name}); continue with '{info['continue_with']}'."
        )
    if not meta or META_KEY not in meta:
        arch = (meta or {}).get("arch")
        what = f"backbone weights ({arch})" if arch else "weights without explorer metadata (e.g. a backbone)"
        return "not_checkpoint", f"{path.name} is a safetensors file of {what}, not an explorer checkpoint."
    return "checkpoint", ""


def inspect_entry(path: Path, source: str = "library") -> tuple[LibraryEntry, bool]:
    """(entry, whether to remember it), never raising: only what the file's own bytes decide is
    remembered, not a transient failure (cannot be read now, out of memory) nor a bug (an unexpected exception)."""
    try:
        status, message = classify_file(path)
        if status != "checkpoint":
            return LibraryEntry(path, status, message, source=source), True
        return _inspect_checkpoint(path, source), True
    except TransientError as exc:
        return LibraryEntry(path, "error", str(exc), source=source), False
    except ExplorerError as exc:
        return LibraryEntry(path, "error", str(exc), source=source), True
    except Exception as exc:  # a library row must never break the page
        if isinstance(exc, OSError) or is_out_of_memory(exc):
            return LibraryEntry(path, "error", f"{path.name} cannot be read now ({type(exc).__name__}: {one_line(exc)}).", source=source), False
        return LibraryEntry(path, "error", f"{path.name} could not be read ({type(exc).__name__}: {one_line(exc)}).", source=source), False


def _inspect_checkpoint(path: Path, source: str) -> LibraryEntry:
    from explorer.analysis.geometry import ordinality_report
    from explorer.store.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path)
    summary = ckpt.summary()
    summary.pop("tensors", None)
    summary["library_note"] = _library_note(summary)
    summary["offers"] = _offers(summary)
    entry = LibraryEntry(path, "ok", "", file_digest(path), source, summary, ckpt.meta.get("metrics"))
    try:
        report = ordinality_report(ckpt.prototypes.matrix.numpy())
        entry.ordinality, entry.violation_rate = report["ordinality"], report["violation_rate"]
    except ExplorerError as exc:
        entry.message = str(exc)
    entry.backbone_ok, entry.backbone_note = backbone_status(ckpt.backbone_spec)
    return entry


def is_candidate(name: str) -> bool:
    """A file name the library lists: a weight / checkpoint suffix, not hidden."""
    return not name.startswith(".") and Path(name).suffix.lower() in CHECKPOINT_SUFFIXES


def store_upload(data: bytes, filename: str, folder: str | Path | None = None) -> Path:
    """Keep uploaded bytes as ``<folder>/<content hash>/<safe filename>`` (written atomically); returns the path."""
    if not data:
        raise ExplorerError(f"{filename or 'The upload'} is empty (0 bytes).")
    folder = Path(folder) if folder is not None else cache_folder() / "uploaded-checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    safe = safe_filename(Path(filename or "upload").name, strip="._", default="upload")
    path = folder / bytes_digest(data) / safe
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_bytes(path, data)
    return path


# --- analyses ------------------------------------------------------------------------------------


def geometry_summary(matrix, window: tuple[int, int] | None = None, logit_scale: float = 100.0) -> dict[str, Any]:
    """Everything the Geometry page shows for prototypes ``matrix`` (R x E) in rank ``window``.

    Keys: window (a, b), similarity (cosine), views {cosine, max_normalised, softmax},
    report (ordinality_report), violations (m x m bool), adjacent (N-1 cosines).
    """
    from explorer.analysis.geometry import SIMILARITY_VIEWS, adjacent_similarity, ordinality_report, similarity_matrix, similarity_view, violation_map

    P = np.asarray(matrix.detach().cpu().numpy() if hasattr(matrix, "detach") else matrix, dtype=np.float64)
    S = similarity_matrix(P, window)
    report = ordinality_report(P, window)
    return {
        "window": tuple(report["window"]),
        "similarity": S,
        "views": {view: similarity_view(S, view, logit_scale) for view in SIMILARITY_VIEWS},
        "report": report,
        "violations": violation_map(S),
        "adjacent": adjacent_similarity(S),
    }


ONNX_VARIANTS = ("fp32", "int8")  # the app's ONNX files: float32 weights, dynamic int8 weights


def onnx_cache_path(content_hash: str, cache_dir: str | Path | None = None, variant: str = "fp32") -> Path:
    """``<cache>/onnx/<content_hash>.onnx`` (fp32) or ``<content_hash>-int8.onnx``: a checkpoint's ONNX
    export, keyed by its content."""
    if variant not in ONNX_VARIANTS:
        raise ExplorerError(f"Unknown ONNX variant '{variant}'; there are {', '.join(ONNX_VARIANTS)}.")
    folder = Path(cache_dir) if cache_dir is not None else cache_folder()
    suffix = "" if variant == "fp32" else f"-{variant}"
    return folder / "onnx" / f"{safe_filename(content_hash)}{suffix}.onnx"


def onnx_quantization(path: str | Path) -> dict[str, Any] | None:
    """The ``quantization`` record an int8 export stores in its metadata ({scheme, fp32_bytes,
    probe_images, seed, mean_abs_change, max_abs_change} and the file's ``unit``); None for an fp32
    file, or when the onnx package that reads it is missing."""
    from explorer.predict.onnx_runtime import ONNX_META_KEY

    try:
        import onnx
    except ImportError:
        return None
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    meta = json.loads(props.get(ONNX_META_KEY, "{}"))
    if not meta.get("quantization"):
        return None
    return {**meta["quantization"], "unit": meta.get("unit", "")}
