"""The library listing: every file of the library folder plus the ones added in this session, each
described once per (path, mtime, size) and remembered on disk (explorer.store.library)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from explorer.core import settings
from explorer.store import library as lib

ADDED = "added_checkpoints"  # session key: paths the user added (upload or path)


@st.cache_data(show_spinner=False, max_entries=1024, ttl=30)
def _inspect(path: str, mtime_ns: int, size: int, source: str) -> lib.LibraryEntry:
    # also remembered on disk, so that a restarted server lists unchanged files without importing torch;
    # the short ttl re-checks the backbone status (a missing backbone file may appear)
    return lib.inspect_file_cached(path, source=source, cache_dir=settings.cache_folder())


def inspect(path: str | Path, source: str = "library") -> lib.LibraryEntry:
    """LibraryEntry for one file (cached until the file changes); never raises."""
    try:
        key = lib.stat_key(path)
    except OSError:
        return lib.LibraryEntry(Path(path), "error", f"{Path(path).name} no longer exists or cannot be read.", source=source)
    return _inspect(*key, source)


def library_entries() -> list[lib.LibraryEntry]:
    """Every file of the library folder plus the ones added in this session (usable first)."""
    entries = [inspect(p) for p in lib.list_candidates(settings.library_folder())]
    seen = {e.key for e in entries}
    for path in st.session_state.get(ADDED, []):
        if str(path) not in seen:
            entries.append(inspect(path, source="added"))
            seen.add(str(path))
    return sorted(entries, key=lambda e: (not e.ok, e.source != "library", e.name.lower()))


def usable(entries: list[lib.LibraryEntry]) -> list[lib.LibraryEntry]:
    return [e for e in entries if e.ok]


def add_checkpoint_path(path: str | Path) -> lib.LibraryEntry:
    """Inspect ``path`` and, when it is a usable checkpoint, add it to this session's library."""
    path = Path(path).expanduser()
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    if not path.is_file():
        return lib.LibraryEntry(path, "error", f"No file at {path}.", source="added")
    entry = inspect(path, source="added")
    if entry.ok:
        added = list(st.session_state.get(ADDED, []))
        if str(path) not in added:
            added.append(str(path))
        st.session_state[ADDED] = added
    return entry
