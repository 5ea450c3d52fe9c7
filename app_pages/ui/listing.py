"""The library listing: every file of the library folder plus the ones added in this session, from one
index per folder held by the server (explorer.store.library_index: a file is inspected once per
(path, mtime, size), remembered on disk too).

The Library page lists with ``check=True`` (every file stat-ed, new and changed ones inspected, with
progress when there are many) once per script run (app.py calls :func:`begin_run`), and not at all in a
run that only filters its table (:func:`skip_check_next_run`); the other pages offer the last listing
while the folder is unchanged and re-check only the checkpoints they load (:func:`current`), so they
never touch the others.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from explorer.core import settings
from explorer.store import library as lib
from explorer.store.library_index import FolderIndex

ADDED = "added_checkpoints"  # session key: paths the user added (upload or path)
RUN = "listing-run"  # session key: the number of the script run (app.py counts them with begin_run)
CHECKED = "listing-checked"  # session key: the run in which the library folder was last checked file by file
PROGRESS_SLOT = "listing-progress-slot"  # session key: this run's placeholder for the listing's progress bar
PROGRESS_FROM = 8  # files to inspect from which the listing shows a progress bar


@st.cache_resource(show_spinner=False, max_entries=64)
def _folder_index(folder: str, cache_dir: str) -> FolderIndex:
    return FolderIndex(folder, cache_dir)


def folder_index(folder: str | Path) -> FolderIndex:
    """The server's index of ``folder`` (one per folder and cache folder)."""
    return _folder_index(str(folder), str(settings.cache_folder()))


def inspect(path: str | Path, source: str = "library") -> lib.LibraryEntry:
    """LibraryEntry for one file (re-inspected only when it changed); never raises."""
    path = Path(path)
    return folder_index(path.parent).entry(path, source)


def current(entry: lib.LibraryEntry) -> lib.LibraryEntry:
    """``entry`` as its file is now (a page about to load a checkpoint re-checks that one file only)."""
    return inspect(entry.path, entry.source)


def begin_run(progress_slot=None) -> None:
    """Count a new script run (app.py, first thing): the library is checked at most once per run.
    ``progress_slot``: the placeholder (drawn in every run, above the page) where this run's listing
    shows its progress, so that a bar drawn in one run and not the next moves nothing below it."""
    st.session_state[RUN] = st.session_state.get(RUN, 0) + 1
    st.session_state[PROGRESS_SLOT] = progress_slot


def skip_check_next_run() -> None:
    """A widget callback for a rerun that only changes how the listing is shown (a filter): that run
    lists without checking the files again."""
    st.session_state[CHECKED] = st.session_state.get(RUN, 0) + 1


def library_entries(check: bool = False) -> list[lib.LibraryEntry]:
    """Every file of the library folder plus the ones added in this session (usable first).

    ``check``: stat every file and inspect the new and changed ones (the Library page), unless that
    was done already in this run; else the last listing while the folder is unchanged."""
    index = folder_index(settings.library_folder())
    run = st.session_state.get(RUN)
    if run is not None and st.session_state.get(CHECKED) == run:
        check = False
    scans = index.scans
    entries = list(index.entries(check=check, progress=_progress()))
    if run is not None and index.scans != scans:
        st.session_state[CHECKED] = run
    seen = {e.key for e in entries}
    for path in st.session_state.get(ADDED, []):
        if str(path) not in seen:
            entries.append(inspect(path, source="added"))
            seen.add(str(path))
    return sorted(entries, key=lambda e: (not e.ok, e.source != "library", e.name.lower()))


def _progress():
    """A progress callback that draws a bar once there are :data:`PROGRESS_FROM` files to inspect."""
    bar = None

    def show(done: int, total: int, name: str) -> None:
        nonlocal bar
        if total < PROGRESS_FROM:
            return
        if bar is None:
            slot = st.session_state.get(PROGRESS_SLOT)
            bar = (slot or st).progress(0.0)
        if done == total:
            bar.empty()
        elif done % max(1, total // 100) == 0:  # at most a hundred updates sent to the browser
            bar.progress(done / total, text=f"Reading the library: {done} of {total} new or changed files ({name})")

    return show


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
