"""The one atomic write: a temporary file beside the target, fsync, then rename over it.

Every file the explorer writes (checkpoints, resume states, feature chunks, backbone weights,
projection layouts, library listings, uploads, sweep tables) goes through :func:`atomic_path`, so a
crash or a kill at any moment leaves either the old file or the new one, never half of one. The
temporary is named ``.<name>.<random>.tmp`` in the target's folder (same file system, so the
rename is atomic); :func:`remove_temporaries` deletes the ones a killed process left behind. The one
exception is a run's metrics history, a log appended line by line (its reader skips a torn last
line, and a resumed run rewrites it atomically).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Iterator

TMP_SUFFIX = ".tmp"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_filename(text: str, sep: str = "_", strip: str = "", default: str = "") -> str:
    """``text`` fit to be (part of) a file name: every run of characters other than ASCII letters, digits,
    ``_``, ``.`` and ``-`` becomes ``sep``; then the ``strip`` characters are removed from both ends, and
    ``default`` stands in for an empty result."""
    safe = _UNSAFE_NAME.sub(sep, text)
    return (safe.strip(strip) if strip else safe) or default


def temp_pattern(path: str | Path) -> str:
    """The glob pattern of the temporaries :func:`atomic_path` makes for ``path``."""
    return f".{Path(path).name}.*{TMP_SUFFIX}"


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o666) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to ``path``.

    On an exception the temporary is removed and ``path`` is untouched. ``mode`` (less the
    umask) becomes the file's permissions: written files are meant to be shared.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        # after writing: mkstemp makes 0600 files, and a writer may replace the temporary
        # (safetensors' save_file writes its own file and renames it over ``tmp``)
        os.chmod(tmp, mode & ~umask)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def save_file(tensors: dict, filename: str, metadata: dict[str, str] | None = None) -> None:
    """safetensors' ``save_file``, imported on first use (this module stays importable without torch)."""
    from safetensors.torch import save_file as _save_file

    _save_file(tensors, filename, metadata=metadata)


def save_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Write torch ``tensors`` as a safetensors file atomically (contiguous CPU copies)."""
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(data, str(tmp), metadata=metadata)
    return Path(path)


def remove_temporaries(folder: str | Path, patterns: tuple[str, ...] = (f"*{TMP_SUFFIX}",), min_age_s: float = 0.0) -> int:
    """Delete temporaries matching ``patterns`` in ``folder`` older than ``min_age_s``; returns how many.

    A young temporary may belong to a writer that is still running: pass a ``min_age_s`` when
    other processes may be writing to the same folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now, removed = time.time(), 0
    for pattern in patterns:
        for tmp in folder.glob(pattern):
            try:
                if now - tmp.stat().st_mtime >= min_age_s:
                    tmp.unlink()
                    removed += 1
            except OSError:
                pass
    return removed


def file_digest(path: str | Path) -> str:
    """16 hex digits of BLAKE2b over the file's bytes (the content hash)."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    """16 hex digits of BLAKE2b over ``data``."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()
