"""Server-wide resources: the backbone pool and the compute caches over it.

- backbones: one bounded :class:`explorer.backbones.pool.BackboneRegistry` per server (least recently
  used evicted, ``ORDINAL_EXPLORER_MAX_BACKBONES``), each loaded in a background thread so a page never
  waits for one it does not need. Pages get a :class:`~explorer.backbones.pool.BackboneHandle`:
  ``with handle.use() as backbone:`` holds its lock around every use of the backbone (the compute
  functions of ``explorer`` take no lock).
- everything holding a backbone's modules (prompt models) is kept in its pool slot
  (``handle.cached``) and dropped when the backbone is evicted: no Streamlit cache holds a model.
- checkpoints, geometry, projections, decoded tokens and a dataset split's predictions by the
  checkpoint's content hash (BLAKE2b of its bytes); UMAP / t-SNE layouts and image features also on disk.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import threading

import streamlit as st

from explorer.analysis.cuts import DEFAULT_TARGET_RECALL
from explorer.backbones.pool import BackboneHandle, BackboneRegistry, BackboneSlot
from explorer.core import settings
from explorer.core.errors import ExplorerError
from explorer.store import library as lib

log = logging.getLogger("ordinalclip_explorer.app")


# --- backbones ----------------------------------------------------------------------------------


def _on_loaded(slot: BackboneSlot) -> None:
    if slot.details:
        log.error("Loading backbone %s failed:\n%s", slot.spec, slot.details)
    _start_warm_imports()
    _return_freed_memory()  # the state dict the weights were read into


def _on_evict(slot: BackboneSlot) -> None:
    # the evicted backbone's prompt models are gone with its slot; collect now, not at some later
    # full collection, whatever reference cycles torch / open_clip objects form (no gc.freeze here:
    # frozen objects are never collected, and freezing from a loader thread pinned whatever other
    # sessions had in flight)
    gc.collect()
    _return_freed_memory()


def _return_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim; a no-op elsewhere): a backbone's
    tensors are thousands of allocations below glibc's mmap threshold, which free() keeps in the
    loader thread's arena, so without it the server's size never shrinks after an eviction."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


@functools.cache
def _start_warm_imports() -> None:
    """Once per server, in a thread of its own (a page waiting for the backbone does not wait for it):
    import what the Geometry page needs while the user is still looking at the first page."""
    threading.Thread(target=_warm_imports, name="warm-imports", daemon=True).start()


def _warm_imports() -> None:
    import plotly.graph_objects  # noqa: F401

    import explorer.store.checkpoints  # noqa: F401


def new_backbone_registry(max_entries: int) -> BackboneRegistry:
    """A registry with the app's hooks: a failed load logged with its traceback, memory collected and
    returned to the OS after a load and after an eviction."""
    return BackboneRegistry(max_entries=max_entries, on_loaded=_on_loaded, on_evict=_on_evict, precision=settings.default_precision())


@st.cache_resource(show_spinner=False)
def backbone_registry() -> BackboneRegistry:
    """One bounded registry per server (least recently used backbones are evicted)."""
    return new_backbone_registry(settings.max_backbones())


def backbone_slot(spec: str, image_only: bool = False) -> BackboneSlot:
    """The (server-wide) slot of backbone ``spec``; starts loading it in the background (``image_only``:
    the whole backbone when it is kept, else its image tower alone)."""
    return backbone_registry().slot(spec, settings.app_device(), image_only=image_only)


def known_slots() -> list[BackboneSlot]:
    """Backbones this server keeps (loaded or loading), for the sidebar."""
    return backbone_registry().slots()


def backbone_handle(spec: str, image_only: bool = False) -> BackboneHandle:
    """The handle of backbone ``spec``; waits (with a spinner) while it loads."""
    slot = backbone_slot(spec, image_only)
    if slot.pending:
        with st.spinner(f"Loading backbone {spec}…"):
            return slot.handle()
    return slot.handle()


def backbone_for(entry: lib.LibraryEntry, image_only: bool = False) -> BackboneHandle:
    """The handle of a checkpoint's backbone (waits while it loads); checks that it matches.
    ``image_only``: predicting from its stored prototypes, the image tower suffices."""
    if entry.backbone_ok is False:
        raise ExplorerError(f"{entry.name} needs a backbone that is not available here: {entry.backbone_note}")
    handle = backbone_handle(entry.backbone_spec, image_only)
    load_checkpoint(entry).check_backbone(handle.backbone)
    return handle


# --- checkpoints and what is computed from them ---------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=32)
def _load_checkpoint(path: str, content_hash: str):
    from explorer.store.checkpoints import load_checkpoint as _load

    return _load(path)


def load_checkpoint(entry: lib.LibraryEntry):
    """The Checkpoint of a usable entry (cached by content)."""
    if not entry.ok:
        raise ExplorerError(entry.message or f"{entry.path.name} is not a usable checkpoint.")
    return _load_checkpoint(str(entry.path), entry.content_hash)


def prompt_model(entry: lib.LibraryEntry):
    """(the method rebuilt from a full checkpoint on its backbone, the backbone's handle): the model is kept
    with the backbone's pool slot (its text encoder is the backbone's text tower), so it goes when the
    backbone is evicted; run it inside ``handle.use()``."""
    handle = backbone_for(entry)
    path, content_hash = str(entry.path), entry.content_hash
    model = handle.cached(("prompt-model", content_hash), lambda bb: _load_checkpoint(path, content_hash).build_model(bb))
    return model, handle


@st.cache_data(show_spinner=False, max_entries=64)
def _geometry(content_hash: str, window: tuple[int, int] | None, _path: str) -> dict:
    ckpt = _load_checkpoint(_path, content_hash)
    return lib.geometry_summary(ckpt.prototypes.matrix, window, float(ckpt.meta["logit_scale"]))


def geometry(entry: lib.LibraryEntry, window: tuple[int, int] | None = None) -> dict:
    """geometry_summary of a checkpoint's stored prototypes (cached by content hash and window)."""
    load_checkpoint(entry)
    return _geometry(entry.content_hash, norm_window(window, entry.num_classes), str(entry.path))


def norm_window(window, num_ranks) -> tuple[int, int] | None:
    """None for the whole range (one cache entry for "all ranks"), else (a, b) as ints."""
    if window is None or num_ranks is None or (int(window[0]) == 0 and int(window[1]) == num_ranks - 1):
        return None
    return int(window[0]), int(window[1])


def _projection_key(content_hash: str, window) -> str:
    return content_hash if window is None else f"{content_hash}-w{window[0]}_{window[1]}"


@st.cache_data(show_spinner=False, max_entries=128)
def _projection(content_hash: str, window, method: str, dims: int, seed: int, _path: str):
    from explorer.analysis import projections

    P = _load_checkpoint(_path, content_hash).prototypes.matrix.numpy()
    if window is not None:
        P = P[window[0] : window[1] + 1]
        key = _projection_key(content_hash, window)
    else:
        key = content_hash
    layout, _from_disk = projections.cached_projection(P, key, method, dims, seed, cache_dir=settings.cache_folder())
    return layout


def projection(entry: lib.LibraryEntry, window, method: str, dims: int, seed: int):
    """Layout (rows of the window) of a checkpoint's prototypes; UMAP/t-SNE persist on disk."""
    load_checkpoint(entry)
    window = norm_window(window, entry.num_classes)
    return _projection(entry.content_hash, window, method, int(dims), int(seed), str(entry.path))


def projection_is_ready(entry: lib.LibraryEntry, window, method: str, dims: int, seed: int) -> bool:
    """True when the layout is on disk (no spinner needed)."""
    from explorer.analysis import projections

    if method == "pca":
        return True
    window = norm_window(window, entry.num_classes)
    return projections.projection_path(_projection_key(entry.content_hash, window), method, dims, seed, settings.cache_folder()).is_file()


@st.cache_data(show_spinner=False, max_entries=32)
def _decoded(content_hash: str, top: int, backbone_id: str, _path: str, _handle) -> dict:
    from explorer.analysis import decode

    with _handle.use() as backbone:
        return decode.decode_checkpoint(_load_checkpoint(_path, content_hash), backbone, top)


def decoded(entry: lib.LibraryEntry, top: int) -> dict:
    """The ``top`` nearest vocabulary tokens of a checkpoint's learned tokens (cached by content)."""
    handle = backbone_for(entry)
    return _decoded(entry.content_hash, int(top), handle.backbone_id, str(entry.path), handle)


@st.cache_data(show_spinner=False, max_entries=32)
def _split(content_hash: str, dataset: str, split: str, backbone_id: str, _path: str, _handle):
    from explorer.analysis import maps

    with _handle.use() as backbone:
        return maps.split_predictions(_load_checkpoint(_path, content_hash), backbone, dataset, split,
                                      cache_dir=str(settings.cache_folder() / "features"))


def split_predictions(entry: lib.LibraryEntry, dataset: str, split: str):
    """A checkpoint's :class:`~explorer.analysis.maps.SplitPredictions` on a dataset split: features,
    labels and probabilities (cached by content and spec; the features also on disk)."""
    handle = backbone_for(entry)
    return _split(entry.content_hash, dataset.strip(), split, handle.backbone_id, str(entry.path), handle)


@st.cache_data(show_spinner=False, max_entries=64)
def _decision(content_hash: str, dataset: str, split: str, cut: float, recall: float, field: str, backbone_id: str, _path: str,
              _handle) -> dict:
    from explorer.analysis import cuts

    sp = _split(content_hash, dataset, split, backbone_id, _path, _handle)
    return cuts.decision(sp.outputs(), _load_checkpoint(_path, content_hash).predictor(), cut, recall, sp.samples, [field])


def decision(entry: lib.LibraryEntry, dataset: str, split: str, cut: float, recall: float, field: str) -> dict:
    """A checkpoint's decision at ``cut`` on a dataset split (:func:`explorer.analysis.cuts.decision`: the cut's
    report with rates per slice of ``field``, scores, curves, operating points, nearest images), cached."""
    handle = backbone_for(entry)
    return _decision(entry.content_hash, dataset.strip(), split, float(cut), float(recall), field, handle.backbone_id,
                     str(entry.path), handle)


@st.cache_data(show_spinner=False, max_entries=16)
def _comparison(hashes: tuple[str, ...], names: tuple[str, ...], dataset: str, split: str, by: str, cuts: tuple[float, ...],
                recall: float, _entries) -> dict:
    from explorer.analysis.comparison import compare_predictions

    named = {name: (load_checkpoint(e), split_predictions(e, dataset, split)) for name, e in zip(names, _entries)}
    return compare_predictions(named, dataset, by, cuts, recall)


def comparison(entries: dict[str, lib.LibraryEntry], dataset: str, split: str, by: str, cuts: tuple[float, ...] = (),
               recall: float = DEFAULT_TARGET_RECALL) -> dict:
    """:func:`explorer.analysis.comparison.compare_predictions` of the checkpoints ``entries`` (row name ->
    entry) on a dataset split: each evaluated as ``eval --by by`` does, and the model-by-slice matrix (cached)."""
    return _comparison(tuple(e.content_hash for e in entries.values()), tuple(entries), dataset.strip(), split, by,
                       tuple(float(c) for c in cuts), float(recall), list(entries.values()))
