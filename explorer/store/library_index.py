"""The library listing remembered: what :func:`explorer.store.library.inspect_entry` found for each file
of a folder, kept in memory and in one JSON file per folder, valid while the file's (mtime, size) is
unchanged.

- :class:`FolderIndex` lists one folder. ``entries(check=True)`` stats every candidate file and
  re-inspects only the new and changed ones (a library of a thousand unchanged checkpoints costs a
  directory listing, a thousand ``stat`` calls and, after a restart, one JSON read: no torch, no
  tensors, no hashing). ``entries(check=False)`` returns the last listing as long as the folder's own
  modification time is unchanged (adding, removing or renaming a file changes it, and every file the
  explorer writes is renamed into place), so a page that only offers the checkpoints as choices does
  not touch the files; :meth:`FolderIndex.entry` re-checks the one file a page is about to load.
  A folder changed less than :data:`RACY_NS` before the listing read it may change again within the
  same timestamp (file systems count time in steps of up to 2 s), so such a listing is not reused
  (git's "racy" rule): the clock decides only how often the folder is read, never what is listed.
- Only what a file's own bytes decide is remembered: a transient failure (cannot be read now, out of
  memory) or a bug is inspected again next time. The backbone status is never stored: it is checked
  again on every listing (once per backbone spec).
- The index lives in ``<cache>/library/index-<folder key>.json`` (written atomically; two servers
  sharing a cache at worst re-inspect what the other one wrote last).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from explorer.backbones.catalog import backbone_status
from explorer.core.fsio import write_bytes
from explorer.store.library import LibraryEntry, inspect_entry, is_candidate

LISTING_VERSION = 5  # 3: "content" and "method"; 4: one index file per folder (was one file per checkpoint); 5: "offers"
Progress = Callable[[int, int, str], None]  # (files inspected, files to inspect, the next file's name)
_NOT_STORED = ("path", "source", "backbone_ok", "backbone_note")
RACY_NS = 2_000_000_000  # a folder modified this close to its listing is listed again next time


def index_path(folder: str | Path, cache_dir: str | Path) -> Path:
    """``<cache_dir>/library/index-<key>.json``: the index of ``folder`` (keyed by its resolved path)."""
    key = hashlib.blake2b(str(Path(folder).resolve()).encode(), digest_size=10).hexdigest()
    return Path(cache_dir) / "library" / f"index-{key}.json"


def _record(entry: LibraryEntry, stat: os.stat_result) -> dict[str, Any]:
    data = {k: v for k, v in entry.__dict__.items() if k not in _NOT_STORED}
    return {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size, "entry": data}


def _from_record(path: Path, record: dict[str, Any]) -> LibraryEntry:
    return LibraryEntry(path=path, **{k: v for k, v in record["entry"].items() if k not in _NOT_STORED})


def with_backbone_status(entries: list[LibraryEntry]) -> list[LibraryEntry]:
    """Set each usable entry's backbone status (checked once per backbone spec); returns ``entries``."""
    known: dict[str, tuple[bool | None, str]] = {}
    for e in entries:
        if e.ok:
            spec = e.backbone_spec
            if spec not in known:
                known[spec] = backbone_status(spec)
            e.backbone_ok, e.backbone_note = known[spec]
    return entries


class FolderIndex:
    """What is known about the candidate files of one folder (in memory and in one JSON file).

    Thread-safe; the entries it returns are shared between callers and must not be changed."""

    def __init__(self, folder: str | Path, cache_dir: str | Path):
        self.folder = Path(folder)
        self.file = index_path(self.folder, cache_dir)
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, Any]] | None = None  # file name -> {"mtime_ns", "size", "entry"}
        self._entries: dict[str, LibraryEntry] = {}  # file name -> entry of the record (or of a failure)
        self._listed: tuple[int, list[LibraryEntry]] | None = None  # (folder mtime_ns, entries) of a reusable scan
        self._dirty = False  # records changed since the index file was written
        self.scans = 0  # how many times the folder was checked file by file

    def entries(self, check: bool = True, progress: Progress | None = None) -> list[LibraryEntry]:
        """Every candidate file of the folder (sorted by name, case-insensitively), never raising.

        ``check``: stat every file and re-inspect the new and changed ones; else the last listing while
        the folder's modification time is unchanged. ``progress`` is called before each inspection and once when they are done."""
        with self._lock:
            started = time.time_ns()
            try:
                folder_mtime = self.folder.stat().st_mtime_ns
            except OSError:
                self._listed = None
                return []
            if not check and self._listed is not None and self._listed[0] == folder_mtime:
                listed = [e if e.path.name in self._records_loaded() else self._recheck(e.path) for e in self._listed[1]]
            else:
                listed = self._scan(progress)
            racy = started - folder_mtime < RACY_NS
            self._listed = None if racy else (folder_mtime, listed)
            return with_backbone_status(listed)

    def entry(self, path: str | Path, source: str = "library") -> LibraryEntry:
        """One file of the folder, re-inspected when it changed; never raises."""
        path = Path(path)
        with self._lock:
            try:
                stat = path.stat()
            except OSError:
                return LibraryEntry(path, "error", f"{path.name} no longer exists or cannot be read.", source=source)
            entry = self._current(path, stat)
            self._save()
        entry = with_backbone_status([replace(entry)])[0]
        entry.source = source
        return entry

    def _recheck(self, path: Path) -> LibraryEntry:
        """A file whose last inspection was not remembered (a transient failure): inspected again."""
        try:
            entry = self._current(path, path.stat())
        except OSError:
            return LibraryEntry(path, "error", f"{path.name} no longer exists or cannot be read.")
        self._save()
        return entry

    def _records_loaded(self) -> dict[str, dict[str, Any]]:
        if self._records is None:
            self._records = self._read()
        return self._records

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.file.read_bytes())
            if data.get("version") == LISTING_VERSION and isinstance(data.get("files"), dict):
                return data["files"]
        except (OSError, ValueError, AttributeError):
            pass
        return {}

    def _scan(self, progress: Progress | None) -> list[LibraryEntry]:
        stats = []
        try:
            with os.scandir(self.folder) as it:
                for item in it:
                    if is_candidate(item.name) and item.is_file():
                        stats.append((Path(item.path), item.stat()))
        except OSError:
            return []
        self.scans += 1
        stats.sort(key=lambda item: item[0].name.lower())
        records = self._records_loaded()
        changed = {p.name for p, st in stats if not self._unchanged(p.name, st)}
        listed, done = [], 0
        for path, stat in stats:
            if progress is not None and path.name in changed:
                progress(done, len(changed), path.name)
                done += 1
            listed.append(self._current(path, stat))
        if progress is not None and changed:
            progress(done, len(changed), "")
        names = {p.name for p, _ in stats}
        for name in [n for n in records if n not in names]:
            del records[name]
            self._dirty = True
        self._entries = {n: e for n, e in self._entries.items() if n in names}
        self._save()
        return listed

    def _unchanged(self, name: str, stat: os.stat_result) -> bool:
        record = self._records_loaded().get(name)
        return isinstance(record, dict) and record.get("mtime_ns") == stat.st_mtime_ns and record.get("size") == stat.st_size

    def _current(self, path: Path, stat: os.stat_result) -> LibraryEntry:
        """The entry of ``path`` as it is now: remembered, or inspected (and remembered when it may be)."""
        records, name = self._records_loaded(), path.name
        if self._unchanged(name, stat):
            if name not in self._entries:
                try:
                    self._entries[name] = _from_record(path, records[name])
                except (KeyError, TypeError):
                    del records[name]
                    return self._current(path, stat)
            return self._entries[name]
        entry, remember = inspect_entry(path)
        if remember:  # the file's own verdict; a transient failure or a bug is tried again next time
            records[name] = _record(entry, stat)
            self._dirty = True
        elif records.pop(name, None) is not None:
            self._dirty = True
        self._entries[name] = entry
        return entry

    def _save(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        data = {"version": LISTING_VERSION, "folder": str(self.folder), "files": self._records_loaded()}
        try:
            write_bytes(self.file, json.dumps(data, default=str, separators=(",", ":")).encode())
        except OSError:
            pass
