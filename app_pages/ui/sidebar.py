"""The sidebar: the link to this view, the library folder, the active checkpoint, and which backbone is
loaded on what device."""

from __future__ import annotations

import weakref

import streamlit as st

from app_pages.ui.formatting import DEMO_WARNING
from app_pages.ui.links import share_link
from app_pages.ui.listing import usable
from app_pages.ui.pickers import active_entry
from app_pages.ui.resources import backbone_slot, known_slots
from explorer.backbones.pool import BackboneSlot
from explorer.core import settings
from explorer.store import library as lib


def sidebar(entries: list[lib.LibraryEntry], container) -> None:
    """The link to this view, library folder, active checkpoint, and which backbone is loaded on what device."""
    ok = usable(entries)
    folder = settings.library_folder()
    with container:
        share_link()
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
        slot = backbone_slot(active.backbone_spec, image_only=True)  # kept whole, or warm its image tower
    shown = False
    if slot is not None:
        if slot.pending:
            _live_slot(slot)
        else:
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


def _show_slot(slot: BackboneSlot, primary: bool) -> None:
    if slot.pending:
        st.markdown(f"**Backbone:** `{slot.spec}` — loading…")
        return
    if slot.error:
        st.error(f"Backbone `{slot.spec}` could not be loaded: {slot.error}")
        return
    bb = slot.backbone
    label = "Backbone" if primary else "Also loaded"
    st.markdown(f"**{label}:** `{bb.spec}` on **{bb.device.type}**" + (f" ({bb.device})" if bb.device.type == "cuda" else "")
                + (f", {bb.precision.label}" if primary else ""))
    st.caption(f"id `{bb.backbone_id}` · embedding {bb.embed_dim} · {bb.image_size} px"
               + (" · image tower only" if bb.image_only else ""))
    if bb.is_demo:
        st.warning(DEMO_WARNING, icon=":material/warning:")


def _live_slot(slot: BackboneSlot) -> None:
    """The slot's line, redrawn every 0.5 s by a fragment until the next run of the page (it shows the load
    ending); no full rerun of the page for it. (The lost URL parameters once blamed on such a rerun were the
    page's elements moving between runs: app.py's notices container.)"""
    ref = weakref.ref(slot)  # the session's fragment must not keep an evicted backbone alive

    @st.fragment(run_every=0.5)
    def _slot_line():
        current = ref()
        if current is not None:
            _show_slot(current, primary=True)

    _slot_line()
