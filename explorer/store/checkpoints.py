"""The one checkpoint format: a ``.safetensors`` file with JSON metadata.

Tensors: the learner parameters (``learner.context_embeds``, ``learner.rank_embeds``) and
``prototypes`` (R x E, normalised). A prototype-only export keeps just ``prototypes``: prediction
then needs the image encoder alone. Metadata key ``ordinalclip_explorer`` holds JSON::

    {"format": "ordinalclip-explorer", "format_version": 1, "kind": "full" | "prototypes",  (the content)
     "name": ..., "backbone": {"spec": ..., "id": ...}, "learner": {the method's config, "kind": its name},
     "ranks": {labels, values, unit, name}, "logit_scale": 100.0,
     "training": {...} | null, "metrics": {...} | null, "created": ISO time}

Files are written atomically (temporary file + rename): a crash never leaves a half-written
checkpoint. Loading never unpickles anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from explorer.backbones.spec import META_KEY
from explorer.core.errors import ExplorerError
from explorer.core.fileformat import file_format, is_torch_pickle
from explorer.core.fsio import save_safetensors
from explorer.core.ranks import Ranks
from explorer.data.inputs import describe as describe_inputs
from explorer.methods import ENTRY_POINT_GROUP, STORED_DEFAULT, Method, canonical_name, get_method, registry, stored_config
from explorer.predict.prototypes import Prototypes
from explorer.store.resume import RESUME_KEY, describe_resume, read_resume_meta

FORMAT = "ordinalclip-explorer"
FORMAT_VERSION = 1
CONTENTS = ("full", "prototypes")  # what a checkpoint holds (stored under the metadata key "kind")


@dataclass
class Checkpoint:
    """A loaded, validated checkpoint: metadata plus tensors (CPU, float32)."""

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path | None = None

    @property
    def content(self) -> str:
        """What it holds: "full" (the method's tensors and prototypes) or "prototypes" (prototypes only)."""
        return self.meta["kind"]

    @property
    def name(self) -> str:
        return self.meta.get("name") or (self.path.stem if self.path else "checkpoint")

    @property
    def backbone_spec(self) -> str:
        return self.meta["backbone"]["spec"]

    @property
    def backbone_id(self) -> str:
        return self.meta["backbone"]["id"]

    @property
    def ranks(self) -> Ranks:
        return Ranks.from_dict(self.meta["ranks"])

    @property
    def method(self) -> type[Method] | None:
        """The Method class of a full checkpoint (None for prototype-only ones)."""
        data = self.meta.get("learner")
        return get_method(data.get("kind") or STORED_DEFAULT, stored=True) if self.content == "full" and data else None

    @property
    def method_name(self) -> str | None:
        """The registered name of the method that made it (a prototype-only file: its source's; old names resolved)."""
        stored = (self.meta.get("learner") or {}).get("kind") or (self.meta.get("source") or {}).get("learner")
        return canonical_name(stored) if stored else None

    @property
    def method_config(self):
        """The method's typed config (None for prototype-only checkpoints)."""
        data = self.meta.get("learner")
        if not data:
            return None
        return stored_config(data)

    @property
    def classes(self) -> Ranks:
        """What the prototype rows score: the ranks, or a binned method's bins."""
        return Ranks.from_dict(self.meta["classes"]) if self.meta.get("classes") else self.ranks

    @property
    def prototypes(self) -> Prototypes:
        """The stored normalised prototypes."""
        return Prototypes(self.tensors["prototypes"], float(self.meta["logit_scale"]), self.classes)

    def predictor(self):
        """What predicts from image features with the stored tensors (no text encoder needed)."""
        method = self.method
        return method.predictor_from_checkpoint(self) if method is not None else self.prototypes

    def method_tensors(self) -> dict[str, torch.Tensor]:
        """Learner parameters with the ``learner.`` prefix removed."""
        return {k[len("learner.") :]: v for k, v in self.tensors.items() if k.startswith("learner.")}

    def check_backbone(self, backbone) -> None:
        """Raise when ``backbone`` is not the one this checkpoint was made with."""
        if backbone.backbone_id != self.backbone_id:
            raise ExplorerError(
                f"{self.name} was made with backbone {self.backbone_spec} ({self.backbone_id}) "
                f"but {backbone.spec} ({backbone.backbone_id}) is loaded; load that backbone instead."
            )

    def build_model(self, backbone) -> Method:
        """Rebuild the method on ``backbone`` with the stored parameters (full checkpoints only)."""
        if self.content != "full" or self.method_config is None:
            raise ExplorerError(f"{self.name} holds prototypes only; it can predict but its learner cannot be rebuilt.")
        self.check_backbone(backbone)
        model = self.method.build(backbone, self.method_config, self.ranks, seed=None)
        model.load_state_tensors(self.method_tensors(), self.name)
        return model

    def summary(self) -> dict[str, Any]:
        """Short JSON-ready description (what ``ordinal-explorer info`` prints)."""
        cfg = self.meta.get("learner") or {}
        ranks = self.meta["ranks"]
        out = {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "content": self.content,
            "format_version": self.meta["format_version"],
            "backbone": self.meta["backbone"],
            "method": self.method_name,
            "num_ranks": len(ranks["labels"]),
            "ranks": f"{ranks['labels'][0]} .. {ranks['labels'][-1]}" + (f" {ranks['unit']}" if ranks.get("unit") else ""),
            "num_classes": int(self.tensors["prototypes"].shape[0]),  # prototype rows: the ranks, or NumCLIP's bins
            "embed_dim": int(self.tensors["prototypes"].shape[1]),
            "logit_scale": self.meta["logit_scale"],
            "tensors": {k: list(v.shape) for k, v in self.tensors.items()},
            "inputs": describe_inputs(self.meta),
        }
        if self.method is not None:
            out.update(self.method.summary_fields(cfg))
        for key in ("training", "metrics", "created", "source"):
            if self.meta.get(key):
                out[key] = self.meta[key]
        return out


def _atomic_save(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: Path) -> Path:
    data = {k: v.detach().to("cpu", torch.float32) for k, v in tensors.items()}
    return save_safetensors(path, data, metadata={META_KEY: json.dumps(meta, sort_keys=True)})


def _base_meta(content: str, name: str | None, backbone_spec: str, backbone_id: str, ranks: Ranks, logit_scale: float) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": content,
        "name": name,
        "backbone": {"spec": backbone_spec, "id": backbone_id},
        "ranks": ranks.to_dict(),
        "logit_scale": float(logit_scale),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def save_checkpoint(
    path: str | Path,
    model: Method,
    backbone,
    *,
    name: str | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a full checkpoint (the method's tensors + prototypes) atomically; returns the path.
    A method whose prototypes are all it learns is written as a prototype-only checkpoint."""
    if model.checkpoint_content == "prototypes":
        return save_prototypes(path, model.prototypes(), backbone.spec, backbone.backbone_id, name=name or Path(path).stem,
                               source={"learner": model.name}, training=training, metrics=metrics)
    meta = _base_meta("full", name or Path(path).stem, backbone.spec, backbone.backbone_id, model.ranks, model.logit_scale)
    meta.update(model.metadata(), training=training, metrics=metrics, **(extra or {}))
    tensors = {f"learner.{k}": v for k, v in model.state_tensors().items()}
    tensors["prototypes"] = model.prototypes().matrix
    return _atomic_save(tensors, meta, Path(path))


def save_prototypes(
    path: str | Path,
    prototypes: Prototypes,
    backbone_spec: str,
    backbone_id: str,
    *,
    name: str | None = None,
    source: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a prototype-only checkpoint (no learner; prediction needs only the image encoder)."""
    meta = _base_meta("prototypes", name or Path(path).stem, backbone_spec, backbone_id, prototypes.ranks, prototypes.logit_scale)
    meta.update(learner=None, source=source, training=training, metrics=metrics)
    return _atomic_save({"prototypes": prototypes.matrix}, meta, Path(path))


def export_prototypes(checkpoint: Checkpoint, path: str | Path, name: str | None = None) -> Path:
    """Write a prototype-only copy of ``checkpoint`` (predicts exactly like it, no text encoder needed)."""
    source = dict(checkpoint.meta.get("source") or {})
    source.update(name=checkpoint.name, learner=(checkpoint.meta.get("learner") or {}).get("kind") or source.get("learner"))
    if checkpoint.meta.get("preset"):
        source["preset"] = checkpoint.meta["preset"]
    return save_prototypes(
        path, checkpoint.prototypes, checkpoint.backbone_spec, checkpoint.backbone_id, name=name, source=source,
        training=checkpoint.meta.get("training"), metrics=checkpoint.meta.get("metrics"),
    )


def update_metadata(path: str | Path, **fields: Any) -> Path:
    """Rewrite a checkpoint with some metadata fields replaced (e.g. evaluation metrics)."""
    ckpt = load_checkpoint(path)
    ckpt.meta.update(fields)
    return _atomic_save(ckpt.tensors, ckpt.meta, Path(path))


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file; one sentence for pickles and unreadable files."""
    if is_torch_pickle(file_format(path)):
        raise ExplorerError(
            f"{path.name} is a torch pickle, not an explorer checkpoint; pickles are never loaded here "
            "(for reference OrdinalCLIP runs use 'ordinal-explorer import-reference')."
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {}), {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ExplorerError(f"{path.name} is not a readable safetensors file (truncated or corrupt: {exc}).") from exc


def load_checkpoint(path: str | Path, backbone=None) -> Checkpoint:
    """Read and validate a checkpoint; with ``backbone`` also check it is the one the checkpoint needs."""
    path = Path(path)
    if not path.is_file():
        raise ExplorerError(f"Checkpoint not found: {path}.")
    metadata, tensors = _read_safetensors(path)
    raw_meta = metadata.get(META_KEY)
    if raw_meta is None and RESUME_KEY in metadata:
        info = describe_resume(read_resume_meta(metadata[RESUME_KEY], path), path)
        raise ExplorerError(
            f"{path.name} is the resume state of run {info['run']} (epoch {info['epochs_done']} of {info['epochs']}), "
            f"not a checkpoint; continue the run with '{info['continue_with']}' or use {Path(info['checkpoint']).name}."
        )
    if raw_meta is None:
        raise ExplorerError(f"{path.name} is a safetensors file but not an explorer checkpoint (no '{META_KEY}' metadata).")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError as exc:
        raise ExplorerError(f"{path.name} has corrupt checkpoint metadata ({exc.msg}).") from exc
    ckpt = Checkpoint(meta, {k: v.float() for k, v in tensors.items()}, path)
    _validate(ckpt)
    if backbone is not None:
        ckpt.check_backbone(backbone)
    return ckpt


def _validate(ckpt: Checkpoint) -> None:
    """One sentence for anything that makes a checkpoint unusable."""
    meta, name = ckpt.meta, ckpt.path.name if ckpt.path else "checkpoint"
    if meta.get("format") != FORMAT:
        raise ExplorerError(f"{name} is not an explorer checkpoint (format '{meta.get('format')}').")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ExplorerError(
            f"{name} has checkpoint format version {version}, but this explorer reads version {FORMAT_VERSION}; "
            "use the explorer release that wrote it or re-export it."
        )
    if meta.get("kind") not in CONTENTS:
        raise ExplorerError(f"{name} has an unknown checkpoint content '{meta.get('kind')}' (its metadata key 'kind').")
    for key in ("backbone", "ranks", "logit_scale"):
        if key not in meta:
            raise ExplorerError(f"{name} lacks the '{key}' metadata every checkpoint needs.")
    if "prototypes" not in ckpt.tensors:
        raise ExplorerError(f"{name} has no 'prototypes' tensor.")
    for key, tensor in ckpt.tensors.items():
        if not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise ExplorerError(f"{name}: tensor '{key}' contains {bad} NaN/Inf values; the checkpoint is unusable.")
    if not math.isfinite(float(meta["logit_scale"])) or float(meta["logit_scale"]) <= 0:
        raise ExplorerError(f"{name}: logit_scale must be a positive number.")
    ckpt.ranks  # validates labels/values
    classes = ckpt.classes
    protos = ckpt.tensors["prototypes"]
    if protos.dim() != 2 or protos.shape[0] != len(classes):
        raise ExplorerError(f"{name}: prototypes have shape {tuple(protos.shape)} but there are {len(classes)} ranks.")
    if ckpt.content == "full":
        _validate_learner(ckpt, name, len(classes))


def _validate_learner(ckpt: Checkpoint, name: str, num_classes: int) -> None:
    """The stored learner tensors are exactly what the method's config builds."""
    stored = (ckpt.meta.get("learner") or {}).get("kind") or STORED_DEFAULT
    if canonical_name(stored) not in registry():
        raise ExplorerError(f"{name} was made with the method '{stored}', which is not installed here (a plug-in method: "
                            f"install the distribution that registers it under '{ENTRY_POINT_GROUP}').")
    config = ckpt.method_config
    if config is None:
        raise ExplorerError(f"{name} is a full checkpoint without a learner config.")
    if getattr(config, "num_ranks", num_classes) != num_classes:
        raise ExplorerError(f"{name}: the learner has {config.num_ranks} ranks but the metadata lists {num_classes}.")
    expected = ckpt.method.expected_shapes(config)
    stored = {k: tuple(v.shape) for k, v in ckpt.method_tensors().items()}
    for key, shape in stored.items():
        want = expected.get(key)
        if want is None:
            raise ExplorerError(f"{name}: unexpected learner tensor '{key}' for a {config.method} learner.")
        if any(w is not None and w != s for w, s in zip(want, shape)) or len(want) != len(shape):
            raise ExplorerError(f"{name}: tensor '{key}' has shape {shape} but the config needs {want} (None = any).")
    missing = sorted(set(expected) - set(stored))
    if missing:
        raise ExplorerError(f"{name}: learner tensors {missing} are missing.")


def inspect_resume_state(path: str | Path) -> dict[str, Any] | None:
    """What ``info`` shows of a resume state (which run, which epoch), or None when ``path`` is not one."""
    path = Path(path)
    metadata, _ = _read_safetensors(path)
    if RESUME_KEY not in metadata or META_KEY in metadata:
        return None
    return describe_resume(read_resume_meta(metadata[RESUME_KEY], path), path)
