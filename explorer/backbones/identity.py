"""Backbone ids remembered per weight file: every weight is hashed once per file version, not at every load.

A backbone id (``<arch>@<16 hex>``, :func:`explorer.backbones.load.weights_digest`) hashes the
architecture config and every weight: about 2 s for a ViT-B on a 2-core CPU, more than the rest of
a load, and it needs the text tower even when only the image tower is built. So the id is kept in
``<cache folder>/backbone-ids.json`` under a key of the spec's reading (kind, architecture, zoo
name and tag) and the files it was read from (resolved path, size, modification time in ns,
inode). A file that changes gets a new key and is hashed again. A file modified less than
:data:`RACY_SECONDS` before it was hashed is not remembered: its timestamp may not yet tell a
rewrite within the same clock tick apart (git's "racily clean" rule). The cache is advisory: an
unreadable or damaged one is ignored (and rewritten), a failed write is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

from explorer.core.fsio import write_text
from explorer.core.settings import cache_folder

ID_FILE = "backbone-ids.json"
DIGEST_VERSION = 1  # bump when weights_digest changes: old entries are then never matched
RACY_SECONDS = 2.0
MAX_ENTRIES = 512


def file_key(reading: str, files: Sequence[Path]) -> str | None:
    """The cache key of a backbone read as ``reading`` (e.g. ``file|ViT-B-32``) from ``files``; None when
    a file cannot be examined."""
    parts = [f"v{DIGEST_VERSION}", reading]
    try:
        for path in files:
            st = os.stat(path)
            parts.append(f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}")
    except OSError:
        return None
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def _path() -> Path:
    return cache_folder() / ID_FILE


def _read() -> dict[str, str]:
    try:
        data = json.loads(_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}


def known_id(key: str | None) -> str | None:
    """The remembered backbone id of ``key`` (None: not known, hash the weights)."""
    return _read().get(key) if key else None


def remember_id(key: str | None, backbone_id: str, files: Sequence[Path]) -> None:
    """Keep ``backbone_id`` under ``key`` unless a file is too recent to be trusted (:data:`RACY_SECONDS`)."""
    if not key:
        return
    try:
        newest = max((os.stat(path).st_mtime for path in files), default=0.0)
    except OSError:
        return
    if time.time() - newest < RACY_SECONDS:
        return
    entries = _read()
    entries.pop(key, None)
    entries[key] = backbone_id
    kept = dict(list(entries.items())[-MAX_ENTRIES:])
    try:
        write_text(_path(), json.dumps(kept, indent=0))
    except OSError:
        pass
