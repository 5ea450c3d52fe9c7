"""explorer.store.library_index: one remembered listing per folder (in memory and one JSON file), a changed
file inspected again, a transient failure never remembered, the other files untouched by a page that
only offers them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from app_testdata import BAD, GOOD, list_candidates, make_library, scan_folder

from explorer.core.errors import TransientError
from explorer.store import library as lib
from explorer.store import library_index as index

REPO = Path(__file__).resolve().parent.parent
HOUR_NS = 3600 * 10**9


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("library")
    make_library(path)
    return path


@pytest.fixture()
def small(folder, tmp_path) -> Path:
    """A folder of two good checkpoints and one bad file, last changed an hour ago (its listing is reusable)."""
    path = tmp_path / "small"
    path.mkdir()
    for name in ("dots-plain.safetensors", "dots-rank-linear.safetensors", "corrupt.safetensors"):
        shutil.copy(folder / name, path / name)
    age(path)
    return path


def age(path: Path) -> None:
    """Set the folder's modification time an hour back (as if it had not changed since)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - HOUR_NS))


def forbid_inspection(monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("re-inspected")

    monkeypatch.setattr(index, "inspect_entry", boom)


def test_the_listing_is_the_scan(folder, tmp_path):
    """The index lists what scan_folder finds (same rows), plus the backbone status."""
    listed = index.FolderIndex(folder, tmp_path).entries()
    assert [e.path.name for e in listed] == [p.name for p in list_candidates(folder)]
    by_name = {e.path.stem: e for e in listed}
    assert set(by_name) == set(GOOD) | set(BAD)
    for e in scan_folder(folder):
        assert by_name[e.path.stem].row() == e.row() and by_name[e.path.stem].content_hash == e.content_hash


def test_the_listing_is_remembered_in_one_file(folder, tmp_path, monkeypatch):
    fresh = index.FolderIndex(folder, tmp_path).entries()
    assert list((tmp_path / "library").iterdir()) == [index.index_path(folder, tmp_path)]
    forbid_inspection(monkeypatch)  # a restarted server: a new index, read from its file
    again = index.FolderIndex(folder, tmp_path).entries()
    assert [e.row() for e in again] == [e.row() for e in fresh]
    assert [(e.summary, e.content_hash, e.message) for e in again] == [(e.summary, e.content_hash, e.message) for e in fresh]
    added = index.FolderIndex(folder, tmp_path).entry(folder / "dots-plain.safetensors", source="added")
    assert added.source == "added" and added.row() == {**next(e for e in fresh if e.path.stem == "dots-plain").row(), "source": "added"}


@pytest.mark.parametrize("failure", [TransientError("x.safetensors cannot be read now (timed out)."), MemoryError(),
                                     TimeoutError("timed out"), ZeroDivisionError("a bug")],
                         ids=lambda f: type(f).__name__)
def test_only_a_files_own_fault_is_remembered(small, tmp_path, monkeypatch, failure):
    """A transient failure (typed, or out of memory, or an OSError) and a bug are not remembered, in
    memory or on disk: the next listing (even a reused one, even after a restart) reads the file again."""
    def fails(p):
        raise failure

    listing = index.FolderIndex(small, tmp_path / "c")
    monkeypatch.setattr(lib, "classify_file", fails)
    first = {e.path.name: e for e in listing.entries()}
    assert all(e.status == "error" for e in first.values())
    assert all(("cannot be read now" in e.message) != isinstance(failure, ZeroDivisionError) for e in first.values())
    assert not list((tmp_path / "c").rglob("*.json"))
    monkeypatch.undo()
    assert [e.ok for e in listing.entries(check=False)] == [False, True, True]  # corrupt, dots-plain, dots-rank-linear
    assert "corrupt" in listing.entries(check=False)[0].message
    assert [e.ok for e in index.FolderIndex(small, tmp_path / "c").entries()] == [False, True, True]


def test_a_changed_file_is_inspected_again(small, tmp_path, monkeypatch):
    """``check=True`` stats every file; ``check=False`` reuses the listing of an unchanged folder (a file
    rewritten in place is not seen there) and :meth:`entry` re-checks the one file asked for."""
    listing = index.FolderIndex(small, tmp_path)
    assert [e.ok for e in listing.entries()] == [False, True, True]
    target = small / "dots-plain.safetensors"
    target.write_bytes(b"garbage, now")  # in place: the folder's own modification time does not change
    assert listing.entries(check=False)[1].ok  # not touched
    assert listing.entry(target).status == "error"
    assert listing.entries(check=True)[1].status == "error"
    shutil.copy(small / "dots-rank-linear.safetensors", target)  # same name, same folder, other bytes
    assert listing.entries(check=True)[1].ok
    forbid_inspection(monkeypatch)
    assert [e.ok for e in index.FolderIndex(small, tmp_path).entries()] == [False, True, True]  # remembered as it is now


def test_the_reused_listing_follows_files_added_and_removed(small, tmp_path, folder, monkeypatch):
    listing = index.FolderIndex(small, tmp_path)
    assert len(listing.entries(check=False)) == 3
    shutil.copy(folder / "ages-prototypes.safetensors", small / "new.safetensors")  # the folder changes
    assert [e.path.name for e in listing.entries(check=False)][-1] == "new.safetensors"
    (small / "corrupt.safetensors").unlink()
    assert "corrupt.safetensors" not in [e.path.name for e in listing.entries(check=False)]
    age(small)
    forbid_inspection(monkeypatch)
    assert len(listing.entries(check=False)) == 3
    assert index.FolderIndex(small, tmp_path).entries()[-1].name == "ages-prototypes"


def test_a_recently_changed_folder_is_read_again(small, tmp_path):
    """A folder modified within RACY_NS of its listing may change again within the same timestamp:
    that listing is not reused, so an in-place change is seen even with ``check=False``."""
    listing = index.FolderIndex(small, tmp_path)
    os.utime(small)  # changed just now
    assert listing.entries(check=False)[1].ok
    (small / "dots-plain.safetensors").write_bytes(b"garbage, now")
    assert listing.entries(check=False)[1].status == "error"


def test_progress_counts_the_files_inspected(small, tmp_path):
    calls = []
    listing = index.FolderIndex(small, tmp_path)
    listing.entries(progress=lambda *a: calls.append(a))
    assert calls == [(0, 3, "corrupt.safetensors"), (1, 3, "dots-plain.safetensors"),
                     (2, 3, "dots-rank-linear.safetensors"), (3, 3, "")]
    calls.clear()
    shutil.copy(small / "dots-plain.safetensors", small / "copy.safetensors")
    listing.entries(progress=lambda *a: calls.append(a))
    assert calls == [(0, 1, "copy.safetensors"), (1, 1, "")]  # only the new file


def test_a_missing_folder_or_file_is_one_sentence(tmp_path):
    listing = index.FolderIndex(tmp_path / "nowhere", tmp_path)
    assert listing.entries() == []
    gone = listing.entry(tmp_path / "nowhere" / "x.safetensors")
    assert gone.status == "error" and gone.message == "x.safetensors no longer exists or cannot be read."


def test_a_corrupt_index_file_is_rebuilt(small, tmp_path):
    path = index.index_path(small, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert [e.ok for e in index.FolderIndex(small, tmp_path).entries()] == [False, True, True]
    assert len(json.loads(path.read_text())["files"]) == 3  # written again


def test_listing_does_not_import_torch(folder, tmp_path):
    """A restarted server lists unchanged checkpoints, and says which offer the lab, without importing torch (fast start)."""
    from explorer.methods import find_method
    from explorer.methods.hooks import offers

    entries = index.FolderIndex(folder, tmp_path).entries()
    lab = sorted(e.name for e in entries if e.ok and e.summary["content"] == "full" and offers(find_method(e.method), "lab"))
    assert lab and len(lab) < sum(e.ok for e in entries)  # OrdinalCLIP ones, not CoOp nor prototype-only ones
    code = (
        "import sys; from explorer.store.library_index import FolderIndex\n"
        f"es = FolderIndex({str(folder)!r}, {str(tmp_path)!r}).entries()\n"
        "print(sum(e.ok for e in es), 'torch' in sys.modules, ','.join(sorted(e.name for e in es if e.ok and e.offers('lab'))),"
        " 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(GOOD) + 1), "False", ",".join(lab), "False"]
