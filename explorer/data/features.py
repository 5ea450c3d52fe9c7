"""On-disk cache of frozen image-encoder features.

Keyed by backbone id, preprocessing, precision and image content: a folder per (backbone id,
preprocessing and precision hash) holds chunk files (safetensors: ``features`` N x E plus the
content keys in metadata).
A file that changes gets a new content key, so stale features are never returned. Face crops
(a dataset with ``face_margin`` set) have keys of their own (the crop setting is hashed in), so a
cropped run never reuses whole-image features; their chunks also record whether a face was found. Chunks are
written atomically after every batch: an interrupted embedding keeps what it finished and a
re-run computes only the rest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from explorer.core.fsio import remove_temporaries, save_safetensors

STALE_TMP_SECONDS = 3600.0  # a chunk write takes well under a second
def default_cache() -> Path:
    """``<cache folder>/features`` (``$ORDINAL_EXPLORER_CACHE`` or ``.cache/``, as for every derived file)."""
    from explorer.core.settings import cache_folder

    return cache_folder() / "features"


class Interrupted(Exception):
    """Raised when a stop was requested (not an error); finished work is kept."""


def content_key(dataset, sample) -> str:
    """BLAKE2b of the image file's bytes (or, for generated images, of their pixels), and of the face
    crop setting when the dataset crops faces."""
    h = hashlib.blake2b(digest_size=16)
    margin = getattr(dataset, "face_margin", None)
    if margin is not None:
        from explorer.data.faces import CROP_ID

        h.update(f"face-crop:{CROP_ID}:{float(margin)!r}|".encode())
    path = dataset.image_path(sample) if hasattr(dataset, "image_path") else None
    if path is not None and Path(path).is_file():
        h.update(Path(path).read_bytes())
    else:
        img = dataset.load_image(sample)
        h.update(f"{img.mode}{img.size}".encode())
        h.update(np.asarray(img).tobytes())
    return h.hexdigest()


def preprocess_id(backbone) -> str:
    """Short hash of the backbone's image preprocessing (its repr lists sizes, crops, mean and std) and of
    its precision when that is not fp32: fp32 and bf16 features never mix (fp32 keys are unchanged)."""
    key = repr(backbone.preprocess)
    precision = backbone.precision.name
    return hashlib.blake2b((key if precision == "fp32" else f"{key}|{precision}").encode(), digest_size=6).hexdigest()


class FeatureCache:
    """Features of one backbone + preprocessing, stored under ``root/<backbone id>/<preprocess id>/``."""

    def __init__(self, backbone, root: str | Path | None = None):
        self.backbone = backbone
        safe_id = backbone.backbone_id.replace("/", "_").replace("@", "-")
        self.folder = Path(root or default_cache()) / safe_id / preprocess_id(backbone)
        self._index: dict[str, torch.Tensor] | None = None
        self._found: dict[str, bool] = {}  # content key -> face found (face-crop keys only)
        self.last_faces: list[bool | None] = []  # per sample of the last features() call: face found (None: whole)

    def _load_index(self) -> dict[str, torch.Tensor]:
        if self._index is None:
            self._remove_stale_temporaries()
            index: dict[str, torch.Tensor] = {}
            for chunk in sorted(self.folder.glob("chunk-*.safetensors")):
                try:
                    with safe_open(str(chunk), framework="pt") as f:
                        meta = f.metadata() or {}
                        keys = json.loads(meta.get("keys", "[]"))
                        found = json.loads(meta.get("faces", "null"))
                        feats = f.get_tensor("features")
                except (SafetensorError, OSError, ValueError, json.JSONDecodeError):
                    continue  # a damaged chunk is ignored; its images are embedded again
                if not isinstance(keys, list) or feats.dim() != 2 or len(keys) != len(feats) or feats.shape[1] != self.backbone.embed_dim:
                    continue  # not a chunk of this cache (wrong shape): embed its images again
                index.update(zip(keys, feats))
                if isinstance(found, list) and len(found) == len(keys):
                    self._found.update((k, bool(v)) for k, v in zip(keys, found) if v is not None)
            self._index = index
        return self._index

    def _remove_stale_temporaries(self, max_age_s: float = STALE_TMP_SECONDS) -> None:
        """Delete chunk temporaries a killed process left behind; young ones may belong to a live writer."""
        remove_temporaries(self.folder, ("*.tmp",), min_age_s=max_age_s)

    def __len__(self) -> int:
        return len(self._load_index())

    def _write_chunk(self, keys: list[str], feats: torch.Tensor, found: list[bool | None]) -> None:
        name = f"chunk-{hashlib.blake2b(''.join(keys).encode(), digest_size=8).hexdigest()}.safetensors"
        meta = {"keys": json.dumps(keys)}
        if any(f is not None for f in found):
            meta["faces"] = json.dumps(found)
        save_safetensors(self.folder / name, {"features": feats}, metadata=meta)

    def features(
        self,
        dataset,
        samples: Sequence,
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """N x E normalised features for ``samples``; computes (and stores) only the missing ones.

        ``progress(done, total)`` is called after every batch; ``should_stop()`` returning True
        stops after the current batch with ``Interrupted`` (the finished batches stay cached).
        ``chunk_size``: images per chunk file (default one batch; a shard of ``embed --shards`` is one
        chunk, written when it is complete). Afterwards ``last_faces`` says, per sample, whether a face
        was found (None: whole images).
        """
        index = self._load_index()
        keys = [content_key(dataset, s) for s in samples]
        todo = [i for i, k in enumerate(keys) if k not in index]
        todo_unique = list({keys[i]: i for i in todo}.values())
        total = len(todo_unique)
        if progress:
            progress(0, total)
        pending = _Pending(chunk_size or batch_size)
        for start in range(0, total, batch_size):
            if should_stop and should_stop():
                self._flush(pending, index)
                raise Interrupted(f"Embedding stopped after {start} of {total} images; run again to resume.")
            batch = todo_unique[start : start + batch_size]
            images, found = zip(*(_model_input(dataset, samples[i]) for i in batch))
            pending.add([keys[i] for i in batch], self.backbone.encode_images(list(images), batch_size=batch_size), list(found))
            if pending.full or start + batch_size >= total:
                self._flush(pending, index)
            if progress:
                progress(min(start + batch_size, total), total)
        self.last_faces = [self._found.get(k) for k in keys]
        if not keys:
            return torch.zeros(0, self.backbone.embed_dim)
        return torch.stack([index[k] for k in keys]).float()

    def _flush(self, pending: "_Pending", index: dict[str, torch.Tensor]) -> None:
        """Write the embedded images not yet on disk as one chunk and add them to the index."""
        if not pending.keys:
            return
        feats = torch.cat(pending.feats)
        self._write_chunk(pending.keys, feats, pending.found)
        index.update(zip(pending.keys, feats))
        self._found.update((k, f) for k, f in zip(pending.keys, pending.found) if f is not None)
        pending.clear()


class _Pending:
    """Features embedded but not written yet (at most one chunk's worth)."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self.clear()

    def clear(self) -> None:
        self.keys: list[str] = []
        self.feats: list[torch.Tensor] = []
        self.found: list[bool | None] = []

    def add(self, keys: list[str], feats: torch.Tensor, found: list[bool | None]) -> None:
        self.keys += keys
        self.feats.append(feats)
        self.found += found

    @property
    def full(self) -> bool:
        return len(self.keys) >= self.size


def _model_input(dataset, sample):
    """(image the model sees, face found or None): datasets without face cropping give whole images."""
    if hasattr(dataset, "model_input"):
        return dataset.model_input(sample)
    return dataset.load_image(sample), None
