"""On-disk cache of frozen image-encoder features.

Keyed by backbone id, preprocessing and image content: a folder per (backbone id, preprocessing
hash) holds chunk files (safetensors: ``features`` N x E plus the content keys in metadata).
A file that changes gets a new content key, so stale features are never returned. Chunks are
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

from .fsio import remove_temporaries, save_safetensors

STALE_TMP_SECONDS = 3600.0  # a chunk write takes well under a second
def default_cache() -> Path:
    """``<cache folder>/features`` (``$ORDINAL_EXPLORER_CACHE`` or ``.cache/``, as for every derived file)."""
    from .library import cache_folder

    return cache_folder() / "features"


class Interrupted(Exception):
    """Raised when a stop was requested (not an error); finished work is kept."""


def content_key(dataset, sample) -> str:
    """BLAKE2b of the image file's bytes (or, for generated images, of their pixels)."""
    h = hashlib.blake2b(digest_size=16)
    path = dataset.image_path(sample) if hasattr(dataset, "image_path") else None
    if path is not None and Path(path).is_file():
        h.update(Path(path).read_bytes())
    else:
        img = dataset.load_image(sample)
        h.update(f"{img.mode}{img.size}".encode())
        h.update(np.asarray(img).tobytes())
    return h.hexdigest()


def preprocess_id(backbone) -> str:
    """Short hash of the backbone's image preprocessing (its repr lists sizes, crops, mean and std)."""
    return hashlib.blake2b(repr(backbone.preprocess).encode(), digest_size=6).hexdigest()


class FeatureCache:
    """Features of one backbone + preprocessing, stored under ``root/<backbone id>/<preprocess id>/``."""

    def __init__(self, backbone, root: str | Path | None = None):
        self.backbone = backbone
        safe_id = backbone.backbone_id.replace("/", "_").replace("@", "-")
        self.folder = Path(root or default_cache()) / safe_id / preprocess_id(backbone)
        self._index: dict[str, torch.Tensor] | None = None

    def _load_index(self) -> dict[str, torch.Tensor]:
        if self._index is None:
            self._remove_stale_temporaries()
            index: dict[str, torch.Tensor] = {}
            for chunk in sorted(self.folder.glob("chunk-*.safetensors")):
                try:
                    with safe_open(str(chunk), framework="pt") as f:
                        keys = json.loads((f.metadata() or {}).get("keys", "[]"))
                        feats = f.get_tensor("features")
                except (SafetensorError, OSError, ValueError, json.JSONDecodeError):
                    continue  # a damaged chunk is ignored; its images are embedded again
                if not isinstance(keys, list) or feats.dim() != 2 or len(keys) != len(feats) or feats.shape[1] != self.backbone.embed_dim:
                    continue  # not a chunk of this cache (wrong shape): embed its images again
                index.update(zip(keys, feats))
            self._index = index
        return self._index

    def _remove_stale_temporaries(self, max_age_s: float = STALE_TMP_SECONDS) -> None:
        """Delete chunk temporaries a killed process left behind; young ones may belong to a live writer."""
        remove_temporaries(self.folder, ("*.tmp",), min_age_s=max_age_s)

    def __len__(self) -> int:
        return len(self._load_index())

    def _write_chunk(self, keys: list[str], feats: torch.Tensor) -> None:
        name = f"chunk-{hashlib.blake2b(''.join(keys).encode(), digest_size=8).hexdigest()}.safetensors"
        save_safetensors(self.folder / name, {"features": feats}, metadata={"keys": json.dumps(keys)})

    def features(
        self,
        dataset,
        samples: Sequence,
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> torch.Tensor:
        """N x E normalised features for ``samples``; computes (and stores) only the missing ones.

        ``progress(done, total)`` is called after every batch; ``should_stop()`` returning True
        stops after the current batch with ``Interrupted`` (the finished batches stay cached).
        """
        index = self._load_index()
        keys = [content_key(dataset, s) for s in samples]
        todo = [i for i, k in enumerate(keys) if k not in index]
        todo_unique = list({keys[i]: i for i in todo}.values())
        total = len(todo_unique)
        if progress:
            progress(0, total)
        for start in range(0, total, batch_size):
            if should_stop and should_stop():
                raise Interrupted(f"Embedding stopped after {start} of {total} images; run again to resume.")
            batch = todo_unique[start : start + batch_size]
            images = [dataset.load_image(samples[i]) for i in batch]
            feats = self.backbone.encode_images(images, batch_size=batch_size)
            batch_keys = [keys[i] for i in batch]
            self._write_chunk(batch_keys, feats)
            index.update(zip(batch_keys, feats))
            if progress:
                progress(min(start + batch_size, total), total)
        if not keys:
            return torch.zeros(0, self.backbone.embed_dim)
        return torch.stack([index[k] for k in keys]).float()
