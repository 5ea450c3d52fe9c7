"""The app's server-wide resources under load: what is built on a backbone goes with it when the pool
evicts it (no Streamlit cache keeps a model alive), handles carry their lock, borrowed backbones stay.

Outside a Streamlit run (st.cache_* then work as plain in-memory caches); each test uses its own pool.
"""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
from app_testdata import build, demo_backbone

from explorer.backbones.pool import BackboneRegistry
from explorer.store import library as lib
from explorer.store.checkpoints import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def pool(monkeypatch):
    from app_pages.ui import resources

    registry = resources.new_backbone_registry(max_entries=1)  # the app's hooks: eviction collects and frees
    monkeypatch.setattr(resources, "backbone_registry", lambda: registry)
    monkeypatch.setenv("ORDINAL_EXPLORER_DEVICE", "cpu")
    return registry


def test_eviction_drops_the_prompt_models_of_the_evicted_backbone(pool, tmp_path):
    from app_pages.ui import resources

    path = tmp_path / "rank.safetensors"
    save_checkpoint(path, build("ordinalclip", seed=3), demo_backbone(), name="rank")
    entry = lib.inspect_entry(path)[0]
    model, handle = resources.prompt_model(entry)
    assert resources.prompt_model(entry)[0] is model  # cached with the backbone
    assert handle.backbone is resources.backbone_for(entry).backbone
    backbone, tower = weakref.ref(handle.backbone), weakref.ref(model.encoder.transformer)
    del model, handle
    pool.slot("ordinalclip-demo@/no/such/file.safetensors", "cpu")  # another backbone: demo is evicted
    gc.collect()
    assert len(pool) == 1 and backbone() is None and tower() is None


def test_a_handle_holds_its_backbones_lock_while_in_use(pool):
    handle = pool.handle("demo", "cpu", timeout=120)
    with handle.use() as backbone:
        assert backbone is handle.backbone
        other = threading.Thread(target=lambda: got.append(handle.slot.lock.acquire(timeout=0.1)))
        got: list[bool] = []
        other.start()
        other.join()
        assert got == [False]  # another thread waits while the backbone is in use
    assert handle.slot.lock.acquire(timeout=1)
    handle.slot.lock.release()


def test_a_borrowed_backbone_is_not_evicted_until_returned(pool):
    with pool.borrow("demo", "cpu", timeout=120) as handle:
        pool.slot("ordinalclip-demo@/no/such/file.safetensors", "cpu")
        assert "demo" in [s.spec for s in pool.slots()]  # over the limit while borrowed
        kept = weakref.ref(handle.backbone)
    assert [s.spec for s in pool.slots()] == ["ordinalclip-demo@/no/such/file.safetensors"]
    del handle
    gc.collect()
    assert kept() is None


def test_a_transient_load_failure_is_retried():
    from explorer.core.errors import TransientError

    calls = []

    def flaky(spec, device=None):
        calls.append(spec)
        if len(calls) == 1:
            raise TransientError("The hub cannot be reached now.")
        return "loaded"

    registry = BackboneRegistry(max_entries=2, loader=flaky)
    with pytest.raises(TransientError):
        registry.get("x", timeout=10)
    assert registry.get("x", timeout=10) == "loaded" and len(calls) == 2
    assert registry.get("x", timeout=10) == "loaded" and len(calls) == 2  # a success is kept


LIBRARY_RUN = """
import builtins, sys, threading
sys.path.insert(0, {repo!r})
real, heavy = builtins.__import__, {{}}

def watch(name, *a, **k):
    root = name.split(".")[0]
    if root in ("torch", "open_clip", "umap", "sklearn") and root not in sys.modules:
        heavy.setdefault(root, threading.current_thread().name)
    return real(name, *a, **k)

builtins.__import__ = watch
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({app!r}, default_timeout=120).run()
assert not at.exception, [e.value for e in at.exception]
print(at.title[0].value, len(at.dataframe), sorted(r for r, thread in heavy.items() if thread != "load-backbone-demo"))
"""


def test_the_library_page_imports_neither_torch_nor_open_clip(tmp_path):
    """Server start to the first page: the Library (listing remembered on disk) needs no model, so the
    page's own thread imports no torch, open_clip, umap or scikit-learn (the active checkpoint's backbone
    loads in its own thread, which imports them)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from app_testdata import make_library

    from explorer.store.library_index import FolderIndex

    repo = Path(__file__).resolve().parents[1]
    folder, cache = tmp_path / "library", tmp_path / "cache"
    make_library(folder)
    FolderIndex(folder, cache).entries()  # what a server that ran before remembered
    env = {**os.environ, "ORDINAL_EXPLORER_CHECKPOINTS": str(folder), "ORDINAL_EXPLORER_CACHE": str(cache),
           "ORDINAL_EXPLORER_DEVICE": "cpu"}
    code = LIBRARY_RUN.format(repo=str(repo), app=str(repo / "app.py"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[-2] == "Library 1 []", out.stdout
