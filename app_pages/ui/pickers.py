"""Choosing checkpoints (the active one, the compare set), a rank window, a face and a dataset split,
and the session state that carries the choices from page to page. The URL names them, so that a link
opens the same view: ``?checkpoint=NAME`` the active checkpoint, ``?checkpoints=A&checkpoints=B`` the
compare set (both read once per value, written on every run); the rank window and the dataset and
split are widgets bound to the URL (``bind="query-params"``, their keys the parameters' names)."""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from app_pages.ui.formatting import no_checkpoints_message
from app_pages.ui.listing import current, library_entries, usable
from explorer.core import settings
from explorer.store import library as lib

ACTIVE = "active_checkpoint"  # session key: path of the active checkpoint
COMPARE = "compare_checkpoints"  # session key: paths of the compare set
CHECKPOINT, CHECKPOINTS = "checkpoint", "checkpoints"  # URL parameters: the active checkpoint, the compare set
SPLITS = ("test", "val", "train", "all")


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
        return f"{name} · {e.method or e.summary.get('content', '')} · {e.num_ranks} ranks"

    return fmt


def url_names(entries: list[lib.LibraryEntry]) -> dict[str, str]:
    """The name each usable checkpoint has in a URL (entry key -> name): its own, or its file name where two share one."""
    ok = usable(entries)
    names = [e.name for e in ok]
    return {e.key: e.path.name if names.count(e.name) > 1 else e.name for e in ok}


def find_entry(entries: list[lib.LibraryEntry], wanted: str) -> lib.LibraryEntry | None:
    """The usable checkpoint a URL names (by its URL name, name, file name or file stem)."""
    names = url_names(entries)
    ok = usable(entries)
    return next((e for e in ok if wanted == names[e.key]), None) or next((e for e in ok if wanted in (e.name, e.path.name, e.path.stem)), None)


def apply_query_checkpoints(entries: list[lib.LibraryEntry]) -> None:
    """``?checkpoint=<name>`` picks the active checkpoint and ``?checkpoints=<name>&...`` the compare set (each
    once per value: a value this session wrote itself is already applied); a name not in the library is
    said in one sentence."""
    for param, apply in ((CHECKPOINT, _apply_active), (CHECKPOINTS, _apply_compare)):
        wanted = tuple(st.query_params.get_all(param))
        if not wanted or st.session_state.get(f"_query_{param}_applied") == wanted:
            continue
        st.session_state[f"_query_{param}_applied"] = wanted
        found = [find_entry(entries, w) for w in wanted]
        missing = [w for w, e in zip(wanted, found) if e is None]
        if missing:
            st.warning(f"The link names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not in this library "
                       f"({settings.library_folder()}).")
        if any(found):
            apply([e for e in found if e is not None])


def _apply_active(found: list[lib.LibraryEntry]) -> None:
    st.session_state[ACTIVE] = found[0].key


def _apply_compare(found: list[lib.LibraryEntry]) -> None:
    st.session_state[COMPARE] = list(dict.fromkeys(e.key for e in found))


def _write_query(param: str, values: list[str]) -> None:
    """Write a URL parameter (and remember it as applied, so that it is not applied again)."""
    if tuple(st.query_params.get_all(param)) != tuple(values):
        st.query_params[param] = values
    st.session_state[f"_query_{param}_applied"] = tuple(values)


def active_entry(entries: list[lib.LibraryEntry]) -> lib.LibraryEntry | None:
    """The active checkpoint (the first usable one when none was picked)."""
    ok = usable(entries)
    if not ok:
        return None
    key = st.session_state.get(ACTIVE)
    for e in ok:
        if e.key == key:
            return e
    full = [e for e in ok if e.summary.get("content") == "full" and e.backbone_ok is not False]
    return (full or ok)[0]


def choose_checkpoint(entries: list[lib.LibraryEntry], widget_key: str, label: str = "Checkpoint",
                      allowed: Callable[[lib.LibraryEntry], bool] | None = None, help: str | None = None,
                      container=None) -> lib.LibraryEntry | None:
    """A selectbox of usable checkpoints that starts at (and updates) the active one; the chosen entry as
    its file is now (only that file is checked)."""
    options = [e for e in usable(entries) if allowed is None or allowed(e)]
    if not options:
        return None
    keys = [e.key for e in options]
    active = active_entry(entries)
    index = keys.index(active.key) if active and active.key in keys else 0
    where = container or st
    key = where.selectbox(label, keys, index=index, key=widget_key, format_func=_label(options), help=help)
    st.session_state[ACTIVE] = key
    _write_query(CHECKPOINT, [url_names(entries)[key]])
    return current(options[keys.index(key)])


def page_checkpoint(widget_key: str, **choose: Any):
    """The page's checkpoint picker (below the title app.py draws): ``(entry, checkpoint)``, or None (with a
    message) when there is none."""
    entry = choose_checkpoint(library_entries(), widget_key, **choose)
    if entry is None:
        no_checkpoints_message()
        return None
    return entry, load_checkpoint(entry)


def load_checkpoint(entry: lib.LibraryEntry):
    """The entry's checkpoint (resources.load_checkpoint), imported only when a picker has been drawn: a
    page opened from a link shows its controls before scipy and torch are imported."""
    from app_pages.ui import resources

    return resources.load_checkpoint(entry)


def compare_set(entries: list[lib.LibraryEntry]) -> list[str]:
    """Keys of the compare set (defaults to the first usable checkpoints)."""
    ok = [e.key for e in usable(entries)]
    chosen = [k for k in st.session_state.get(COMPARE, []) if k in ok]
    if chosen:
        return chosen[:4]
    preferred = [e.key for e in usable(entries) if e.summary.get("content") == "full" and e.backbone_ok is not False]
    return (preferred + [k for k in ok if k not in preferred])[:3]


def choose_compare(entries: list[lib.LibraryEntry], widget_key: str, label: str = "Checkpoints to compare (2 to 4)") -> list[lib.LibraryEntry]:
    """A multiselect of 2 to 4 usable checkpoints (the compare set); the chosen entries as their files are now."""
    ok = usable(entries)
    keys = [e.key for e in ok]
    chosen = st.multiselect(label, keys, default=compare_set(entries), key=widget_key, format_func=_label(ok),
                            max_selections=4)
    st.session_state[COMPARE] = list(chosen)
    _write_query(CHECKPOINTS, [url_names(entries)[k] for k in chosen])
    by_key = {e.key: e for e in ok}
    return [current(by_key[k]) for k in chosen]


def rank_window(entry: lib.LibraryEntry, widget_key: str, label: str = "Rank window") -> tuple[int, int]:
    """A range slider over the checkpoint's rank labels; returns inclusive indices."""
    ckpt = load_checkpoint(entry)
    labels = ckpt.classes.labels
    if len(labels) < 3:
        return 0, len(labels) - 1
    key = f"{widget_key}-{entry.content_hash[:12]}"  # its own window per checkpoint (and URL parameter)
    lo, hi = st.select_slider(label, options=labels, value=(labels[0], labels[-1]), key=key, bind="query-params",
                              help="Ranks used for the heatmap, ordinality and projections (e.g. ages 15 to 75).")
    a, b = labels.index(lo), labels.index(hi)
    if a == b:
        st.caption("A window needs at least two ranks; showing all of them.")
        return 0, len(labels) - 1
    return min(a, b), max(a, b)


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


def trained_on(entries: list[lib.LibraryEntry]) -> str:
    """The dataset the checkpoints were trained on, when they all share one (else empty)."""
    specs = {(e.summary.get("training") or {}).get("dataset") or "" for e in entries}
    return specs.pop() if len(specs) == 1 else ""


def dataset_split(prefix: str, default: str = "") -> tuple[str, str]:
    """A dataset spec (starting at ``default``) and a split, side by side (widget keys ``<prefix>-dataset``
    and ``<prefix>-split``)."""
    c1, c2 = st.columns([3, 1])
    spec = c1.text_input("Dataset", default, key=f"{prefix}-dataset", bind="query-params",
                         help="A dataset spec, e.g. dots:20 (the bundled demo checkpoints are trained on it), utkface:DIR; "
                              "by default the one the checkpoint was trained on.")
    split = c2.selectbox("Split", SPLITS, key=f"{prefix}-split", bind="query-params")
    return spec.strip(), split
