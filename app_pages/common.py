"""What every page shares: error boundaries, caches (backbones, checkpoints, analyses), checkpoint
choice and the sidebar. A thin layer: the computing is done by ``explorer``.

Caching:
- backbones: a bounded :class:`explorer.backbones.pool.BackboneRegistry` per server (least recently used
  evicted), each loaded in a background thread so a page never waits for one it does not need;
  every encode call holds the backbone's lock.
- library rows: by (path, mtime, size); checkpoints, prompt models, geometry and projections by the
  checkpoint's content hash (BLAKE2b of its bytes); UMAP / t-SNE layouts also on disk.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import traceback
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from explorer.analysis import projections
from explorer.backbones.pool import BackboneRegistry, BackboneSlot
from explorer.core import settings
from explorer.core.errors import ExplorerError
from explorer.store import library as lib

log = logging.getLogger("ordinalclip_explorer.app")

ACTIVE = "active_checkpoint"  # session key: path of the active checkpoint
COMPARE = "compare_checkpoints"  # session key: paths of the compare set
ADDED = "added_checkpoints"  # session key: paths the user added (upload or path)
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"]
DEMO_WARNING = "The demo backbone is in use: a tiny random CLIP for demos and tests; its predictions on real photos are not meaningful."


# --- error boundaries ---------------------------------------------------------------------------


def _summary(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}"


def report_exception(exc: Exception, where: str) -> None:
    """Show ``exc`` as one sentence (never a traceback); unexpected ones are logged with their traceback."""
    if isinstance(exc, ExplorerError):
        st.error(str(exc))
        return
    details = "".join(traceback.format_exception(exc))
    log.error("Unexpected error in %s:\n%s", where, details)
    st.error(f"Something went wrong in {where} ({_summary(exc)}); this is a bug, not something in your input.")
    with st.expander("Details"):
        st.code(details, language="text")


def run_page(fn: Callable[[], None]) -> None:
    """Run a page function; any error becomes an st.error line."""
    try:
        fn()
    except Exception as exc:  # Streamlit's rerun/stop are BaseException and pass through
        report_exception(exc, getattr(fn, "__name__", "the page").replace("_", " "))


@contextlib.contextmanager
def guard(where: str):
    """``with guard("the projection"):`` -- an error inside only replaces that section by a message."""
    try:
        yield
    except Exception as exc:
        report_exception(exc, where)


# --- backbones ----------------------------------------------------------------------------------


def _on_loaded(slot: BackboneSlot) -> None:
    if slot.details:
        log.error("Loading backbone %s failed:\n%s", slot.spec, slot.details)
    _warm_imports()
    # torch, open_clip and the weights stay for a while: keep them out of the cyclic GC's full
    # collections (which otherwise cost ~0.3 s each, now and then, mid-request)
    gc.freeze()


def _on_evict(slot: BackboneSlot) -> None:
    # an evicted backbone must become collectable again: frozen objects are never collected
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _warm_imports() -> None:
    """Import what the Geometry page needs while the user is still looking at the first page."""
    import plotly.graph_objects  # noqa: F401
    import sklearn.decomposition  # noqa: F401

    import explorer.store.checkpoints  # noqa: F401


@st.cache_resource(show_spinner=False)
def backbone_registry() -> BackboneRegistry:
    """One bounded registry per server (least recently used backbones are evicted)."""
    size = settings.max_backbones()
    return BackboneRegistry(max_entries=size, on_loaded=_on_loaded, on_evict=_on_evict)


def device_setting() -> str | None:
    return settings.app_device()


def backbone_slot(spec: str) -> BackboneSlot:
    """The (server-wide) slot of backbone ``spec``; starts loading it in the background."""
    return backbone_registry().slot(spec, device_setting())


def known_slots() -> list[BackboneSlot]:
    """Backbones this server keeps (loaded or loading), for the sidebar."""
    return backbone_registry().slots()


def backbone_for(entry: lib.LibraryEntry):
    """(backbone, lock) for a checkpoint; waits (with a spinner) while it loads; checks it matches."""
    if entry.backbone_ok is False:
        raise ExplorerError(f"{entry.name} needs a backbone that is not available here: {entry.backbone_note}")
    slot = backbone_slot(entry.backbone_spec)
    if slot.pending:
        with st.spinner(f"Loading backbone {entry.backbone_spec}…"):
            backbone = slot.wait()
    else:
        backbone = slot.wait()
    load_checkpoint(entry).check_backbone(backbone)
    return backbone, slot.lock


# --- the library --------------------------------------------------------------------------------


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


@st.cache_resource(show_spinner=False, max_entries=32)
def _load_checkpoint(path: str, content_hash: str):
    from explorer.store.checkpoints import load_checkpoint as _load

    return _load(path)


def load_checkpoint(entry: lib.LibraryEntry):
    """The Checkpoint of a usable entry (cached by content)."""
    if not entry.ok:
        raise ExplorerError(entry.message or f"{entry.path.name} is not a usable checkpoint.")
    return _load_checkpoint(str(entry.path), entry.content_hash)


@st.cache_resource(show_spinner=False, max_entries=16)
def _prompt_model(path: str, content_hash: str, backbone_id: str, _backbone, _lock):
    with _lock:
        return _load_checkpoint(path, content_hash).build_model(_backbone)


def prompt_model(entry: lib.LibraryEntry):
    """(PromptModel, lock) rebuilt from a full checkpoint on its backbone (cached)."""
    backbone, lock = backbone_for(entry)
    return _prompt_model(str(entry.path), entry.content_hash, backbone.backbone_id, backbone, lock), lock


@st.cache_data(show_spinner=False, max_entries=64)
def _geometry(content_hash: str, window: tuple[int, int] | None, _path: str) -> dict:
    ckpt = _load_checkpoint(_path, content_hash)
    return lib.geometry_summary(ckpt.prototypes.matrix, window, float(ckpt.meta["logit_scale"]))


def geometry(entry: lib.LibraryEntry, window: tuple[int, int] | None = None) -> dict:
    """geometry_summary of a checkpoint's stored prototypes (cached by content hash and window)."""
    load_checkpoint(entry)
    return _geometry(entry.content_hash, _norm_window(window, entry.num_classes), str(entry.path))


def _norm_window(window, num_ranks) -> tuple[int, int] | None:
    if window is None or num_ranks is None or (int(window[0]) == 0 and int(window[1]) == num_ranks - 1):
        return None
    return int(window[0]), int(window[1])


@st.cache_data(show_spinner=False, max_entries=128)
def _projection(content_hash: str, window, method: str, dims: int, seed: int, _path: str):
    ckpt = _load_checkpoint(_path, content_hash)
    P = ckpt.prototypes.matrix.numpy()
    key = content_hash
    if window is not None:
        P = P[window[0] : window[1] + 1]
        key = f"{content_hash}-w{window[0]}_{window[1]}"
    layout, _from_disk = projections.cached_projection(P, key, method, dims, seed, cache_dir=settings.cache_folder())
    return layout


def projection(entry: lib.LibraryEntry, window, method: str, dims: int, seed: int):
    """Layout (rows of the window) of a checkpoint's prototypes; UMAP/t-SNE persist on disk."""
    load_checkpoint(entry)
    window = _norm_window(window, entry.num_classes)
    return _projection(entry.content_hash, window, method, int(dims), int(seed), str(entry.path))


def projection_is_ready(entry: lib.LibraryEntry, window, method: str, dims: int, seed: int) -> bool:
    """True when the layout is on disk (no spinner needed)."""
    if method == "pca":
        return True
    window = _norm_window(window, entry.num_classes)
    key = entry.content_hash if window is None else f"{entry.content_hash}-w{window[0]}_{window[1]}"
    return projections.projection_path(key, method, dims, seed, settings.cache_folder()).is_file()


# --- choosing checkpoints -----------------------------------------------------------------------


def _label(entries: list[lib.LibraryEntry]) -> Callable[[str], str]:
    names = {e.key: e.name for e in entries}
    counts: dict[str, int] = {}
    for n in names.values():
        counts[n] = counts.get(n, 0) + 1
    by_key = {e.key: e for e in entries}

    def fmt(key: str) -> str:
        e = by_key.get(key)
        if e is None:
            return key
        name = e.name if counts[e.name] == 1 else f"{e.name} ({e.path.name})"
        return f"{name} · {e.learner or e.summary.get('kind', '')} · {e.num_ranks} ranks"

    return fmt


def apply_query_checkpoint(entries: list[lib.LibraryEntry]) -> None:
    """``?checkpoint=<name or file>`` in the URL picks the active checkpoint (once per session)."""
    wanted = st.query_params.get("checkpoint")
    if not wanted or st.session_state.get("_query_checkpoint_applied") == wanted:
        return
    st.session_state["_query_checkpoint_applied"] = wanted
    for e in usable(entries):
        if wanted in (e.name, e.path.name, e.path.stem):
            st.session_state[ACTIVE] = e.key
            return


def active_entry(entries: list[lib.LibraryEntry]) -> lib.LibraryEntry | None:
    """The active checkpoint (the first usable one when none was picked)."""
    ok = usable(entries)
    if not ok:
        return None
    key = st.session_state.get(ACTIVE)
    for e in ok:
        if e.key == key:
            return e
    full = [e for e in ok if e.summary.get("kind") == "full" and e.backbone_ok is not False]
    return (full or ok)[0]


def choose_checkpoint(entries: list[lib.LibraryEntry], widget_key: str, label: str = "Checkpoint",
                      allowed: Callable[[lib.LibraryEntry], bool] | None = None, help: str | None = None,
                      container=None) -> lib.LibraryEntry | None:
    """A selectbox of usable checkpoints that starts at (and updates) the active one."""
    options = [e for e in usable(entries) if allowed is None or allowed(e)]
    if not options:
        return None
    keys = [e.key for e in options]
    current = active_entry(entries)
    index = keys.index(current.key) if current and current.key in keys else 0
    where = container or st
    key = where.selectbox(label, keys, index=index, key=widget_key, format_func=_label(options), help=help)
    st.session_state[ACTIVE] = key
    return options[keys.index(key)]


def page_checkpoint(title: str, widget_key: str, **choose: Any):
    """The page's title and checkpoint picker: ``(entry, checkpoint)``, or None (with a message) when there is none."""
    st.title(title)
    entry = choose_checkpoint(library_entries(), widget_key, **choose)
    if entry is None:
        no_checkpoints_message()
        return None
    return entry, load_checkpoint(entry)


def compare_set(entries: list[lib.LibraryEntry]) -> list[str]:
    """Keys of the compare set (defaults to the first usable checkpoints)."""
    ok = [e.key for e in usable(entries)]
    chosen = [k for k in st.session_state.get(COMPARE, []) if k in ok]
    if chosen:
        return chosen
    preferred = [e.key for e in usable(entries) if e.summary.get("kind") == "full" and e.backbone_ok is not False]
    return (preferred + [k for k in ok if k not in preferred])[:3]


def choose_compare(entries: list[lib.LibraryEntry], widget_key: str, label: str = "Checkpoints to compare (2 to 4)") -> list[lib.LibraryEntry]:
    ok = usable(entries)
    keys = [e.key for e in ok]
    chosen = st.multiselect(label, keys, default=compare_set(entries), key=widget_key, format_func=_label(ok),
                            max_selections=4)
    st.session_state[COMPARE] = list(chosen)
    by_key = {e.key: e for e in ok}
    return [by_key[k] for k in chosen]


def rank_window(entry: lib.LibraryEntry, widget_key: str, label: str = "Rank window") -> tuple[int, int]:
    """A range slider over the checkpoint's rank labels; returns inclusive indices."""
    ckpt = load_checkpoint(entry)
    labels = ckpt.classes.labels
    if len(labels) < 3:
        return 0, len(labels) - 1
    key = f"{widget_key}-{entry.content_hash}"
    lo, hi = st.select_slider(label, options=labels, value=(labels[0], labels[-1]), key=key,
                              help="Ranks used for the heatmap, ordinality and projections (e.g. ages 15 to 75).")
    a, b = labels.index(lo), labels.index(hi)
    if a == b:
        st.caption("A window needs at least two ranks; showing all of them.")
        return 0, len(labels) - 1
    return min(a, b), max(a, b)


# --- sidebar ------------------------------------------------------------------------------------


def sidebar(entries: list[lib.LibraryEntry], container) -> None:
    """Library folder, active checkpoint, and which backbone is loaded on what device."""
    ok = usable(entries)
    folder = settings.library_folder()
    with container:
        st.caption(f"Library: `{folder}` · {len(ok)} checkpoint{'s' if len(ok) != 1 else ''}"
                   + (f", {len(entries) - len(ok)} other file{'s' if len(entries) - len(ok) != 1 else ''}" if len(entries) > len(ok) else ""))
        active = active_entry(entries)
        if active is None:
            st.markdown("**Active checkpoint:** none")
        else:
            st.markdown(f"**Active checkpoint:** {active.name}")
        _backbone_panel(active)


def _backbone_panel(active: lib.LibraryEntry | None) -> None:
    slot = None
    if active is not None and active.backbone_ok is not False and active.backbone_spec:
        slot = backbone_slot(active.backbone_spec)
    shown = False
    if slot is not None:
        _show_slot(slot, primary=True)
        shown = True
    for other in known_slots():
        if other is not slot and not other.pending and other.backbone is not None:
            _show_slot(other, primary=not shown)
            shown = True
    if active is not None and active.backbone_ok is False:
        st.error(f"The active checkpoint's backbone is not available: {active.backbone_note}")
    if not shown:
        st.markdown("**Backbone:** none loaded")
    if slot is not None and slot.pending:
        _poll_until_loaded(slot)


def _show_slot(slot: BackboneSlot, primary: bool) -> None:
    if slot.pending:
        st.markdown(f"**Backbone:** `{slot.spec}` — loading…")
        return
    if slot.error:
        st.error(f"Backbone `{slot.spec}` could not be loaded: {slot.error}")
        return
    bb = slot.backbone
    label = "Backbone" if primary else "Also loaded"
    st.markdown(f"**{label}:** `{bb.spec}` on **{bb.device.type}**" + (f" ({bb.device})" if bb.device.type == "cuda" else ""))
    st.caption(f"id `{bb.backbone_id}` · embedding {bb.embed_dim} · {bb.image_size} px")
    if bb.is_demo:
        st.warning(DEMO_WARNING, icon=":material/warning:")


def _poll_until_loaded(slot: BackboneSlot) -> None:
    @st.fragment(run_every=0.5)
    def _wait_for_backbone():
        if not slot.pending:
            st.rerun()

    _wait_for_backbone()


# --- small shared widgets -----------------------------------------------------------------------


def face_choices(page: str) -> dict[str, int]:
    """The faces picked on ``page`` (session state): upload digest -> face index (largest first)."""
    return st.session_state.setdefault(f"{page}-face-choices", {})


def face_picker(crop, digest: str, page: str) -> None:
    """A "Face used" selectbox over the faces of ``crop`` (a :class:`explorer.data.faces.FaceCrop` with
    several); the choice is kept per upload in :func:`face_choices` of ``page``."""
    key = f"{page}-face-{digest[:16]}"

    def remember() -> None:
        face_choices(page)[digest] = st.session_state[key]

    st.selectbox("Face used", list(range(crop.num_faces)), index=crop.face_index, format_func=crop.face_label,
                 key=key, on_change=remember, help="Numbered on the preview (largest first); the green box is used.")


def no_checkpoints_message() -> None:
    st.info(
        f"No usable checkpoint yet. Put explorer checkpoints (.safetensors) in `{settings.library_folder()}` "
        f"(or set {settings.ENV_FOLDER}), or add one on the Library page."
    )


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"
