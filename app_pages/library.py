"""Library: every checkpoint in the library folder plus the ones added here; pick the active ones."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages.ui import errors, formatting, listing, pickers, resources
from explorer.core import settings
from explorer.store import library as lib

UPLOAD_TYPES = ["safetensors", "pt", "pth", "ckpt", "bin"]


def library_page() -> None:
    folder = settings.library_folder()
    st.caption(
        f"Checkpoints in `{folder}` (set {settings.ENV_FOLDER} to use another folder) and the ones you add below. "
        "Files that are not usable are listed with the reason; they never break the page."
    )
    table_box, choice = st.container(), st.container()
    st.subheader("Add a checkpoint")
    up, path_col = st.columns(2)
    with up:  # handled before the table is drawn, so that an added checkpoint is listed at once
        _upload_form()
    with path_col:
        _path_form()

    entries = listing.library_entries(check=True)
    ok = listing.usable(entries)
    with table_box:
        _unusable_methods()
        if entries:
            _table(entries)
        if not ok:
            formatting.no_checkpoints_message()
    if not ok:
        return
    with choice:
        st.subheader("Active checkpoints")
        left, right = st.columns(2)
        with left:
            active = pickers.choose_checkpoint(
                entries, "library-active", label="Active checkpoint (Geometry, Interpolation lab, Predict)")
        with right:
            chosen = pickers.choose_compare(entries, "library-compare", label="Compare set (2 to 4 checkpoints)")
            if len(chosen) == 1:
                st.caption("Pick at least one more to compare.")
        if active is not None:
            with st.expander(f"Details of {active.name}", expanded=False):
                st.json(_details(active), expanded=1)
    if active is not None:
        with errors.guard("the ONNX export"):
            _onnx_section(active)


STATUSES = ("ok", "backbone missing", "resume state", "not a checkpoint", "error")  # the table's status column
SEARCHED = ("name", "file", "method", "backbone", "interpolation", "content", "status", "note")  # what the filter reads


def filter_rows(table: pd.DataFrame, text: str, statuses: list[str]) -> pd.DataFrame:
    """The rows of the Library ``table`` whose searched columns contain every word of ``text``
    (case-insensitive) and whose status is one of ``statuses`` (all when empty)."""
    keep = pd.Series(True, index=table.index)
    if statuses:
        keep &= table["status"].isin(statuses)
    words = text.lower().split()
    if words:
        haystack = table[list(SEARCHED)].fillna("").astype(str).agg(" ".join, axis=1).str.lower()
        for word in words:
            keep &= haystack.str.contains(word, regex=False)
    return table[keep]


def _filters(table: pd.DataFrame) -> pd.DataFrame:
    """A text filter and a status filter over the table (nothing is inspected again)."""
    text_col, status_col = st.columns([3, 2])
    text = text_col.text_input("Filter", key="library-filter", placeholder="words in the name, method, backbone, note…",
                               on_change=listing.skip_check_next_run,
                               help="Rows containing every word (name, file, method, backbone, interpolation, status, note).")
    present = [s for s in STATUSES if s in set(table["status"])]
    statuses = status_col.multiselect("Status", present, key="library-status", placeholder="any",
                                      on_change=listing.skip_check_next_run) if len(present) > 1 else []
    shown = filter_rows(table, text, statuses)
    if len(shown) < len(table):
        st.caption(f"{len(shown)} of {len(table)} files match.")
    return shown


def _table(entries: list[lib.LibraryEntry]) -> None:
    table = pd.DataFrame([e.row() for e in entries])
    df = _filters(table) if len(table) > 1 else table
    problems = [e for e in entries if (not e.ok and e.status != "resume") or e.backbone_ok is False]
    resumable = [e for e in entries if e.status == "resume"]
    st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        height=min(36 * (len(df) + 1) + 3, 640),
        column_order=["name", "status", "method", "backbone", "interpolation", "ranks", "range", "MAE", "accuracy %",
                      "metrics on", "ordinality %", "violations %", "file", "note"],
        column_config={
            "MAE": st.column_config.NumberColumn(format="%.3f", help=(
                "Mean absolute error of the point estimate in the ranks' units (expected value; NumCLIP: the regressed "
                "value), from the checkpoint's evaluation; older checkpoints: in rank steps")),
            # narrow number columns and a medium note: the table fits the page instead of scrolling sideways
            "accuracy %": st.column_config.NumberColumn(format="%.1f", width="small"),
            "ordinality %": st.column_config.NumberColumn(format="%.2f", width="small",
                                                          help="All-pairs ordinality of the prototypes (OrdinalCLIP definition)"),
            "violations %": st.column_config.NumberColumn(format="%.2f", width="small"),
            "ranks": st.column_config.NumberColumn(help="Number of ranks R", width="small"),
            "file": st.column_config.TextColumn(width="small"),
            "note": st.column_config.TextColumn(width="medium"),
        },
    )
    if problems:
        with st.expander(f"{len(problems)} file{'s' if len(problems) != 1 else ''} cannot be used", expanded=False):
            for e in problems:
                text = e.backbone_note if e.ok else e.message
                if not text.startswith(e.path.name):
                    text = f"**{e.path.name}**: {text}"
                (st.warning if e.status == "not_checkpoint" else st.error)(text)
    if resumable:
        with st.expander(f"{len(resumable)} interrupted run{'s' if len(resumable) != 1 else ''} can be resumed", expanded=False):
            for e in resumable:
                st.info(f"**{e.path.name}**: {e.message}")


def _unusable_methods() -> None:
    """One sentence per installed plug-in method that cannot be used (found without importing any method)."""
    from explorer.methods import plugin_problems

    problems = plugin_problems()
    if problems:
        with st.expander(f"{len(problems)} plug-in method{'s' if len(problems) != 1 else ''} cannot be used", expanded=False):
            for text in problems.values():
                st.warning(text)


def _details(entry: lib.LibraryEntry) -> dict:
    out = {"file": str(entry.path), "content hash": entry.content_hash, **entry.summary}
    if entry.backbone_note:
        out["backbone note"] = entry.backbone_note
    return out


def _onnx_section(entry: lib.LibraryEntry) -> None:
    """Build (once per content hash and variant, cached on disk) and offer the checkpoint's ONNX files:
    fp32, and int8 with the value change its weights cost."""
    from explorer.predict.onnx_runtime import SNIPPET

    st.subheader("ONNX files")
    left, right = st.columns(2)
    with left:
        st.caption("One file from preprocessed pixels to the answer: the image tower, the prototypes, the softmax "
                   "and the point estimate (no text tower). int8: dynamic int8 weights, about a quarter of the size "
                   "for a ViT-B; what that costs is measured against fp32 on probe images when it is built.")
        built = [_onnx_file(entry, variant) for variant in lib.ONNX_VARIANTS]
    with right:  # the code appears with a file to run (the highlighter is a large script for the page to load)
        if any(built):
            st.caption("Without the explorer (replace M.onnx by the downloaded file):")
            st.code(SNIPPET, language="python")
        else:
            st.caption("A built file runs without the explorer, with onnxruntime, numpy and Pillow only; "
                       "the code that runs it appears here.")


def _onnx_file(entry: lib.LibraryEntry, variant: str) -> bool:
    """The build button of one variant, or its download button (int8: with its value change); whether the file is built."""
    path = lib.onnx_cache_path(entry.content_hash, variant=variant)
    suffix = "" if variant == "fp32" else f"-{variant}"
    if not path.is_file() and st.button(f"Build the {variant} ONNX file of {entry.name}", key=f"library-onnx-build{suffix}"):
        build_onnx(entry, path, variant)
    if not path.is_file():
        return False
    st.download_button(f"Download {entry.name}{suffix}.onnx ({variant}, {path.stat().st_size / 1e6:.1f} MB)",
                       data=path.read_bytes, file_name=f"{entry.name}{suffix}.onnx", mime="application/octet-stream",
                       on_click="ignore", key=f"library-onnx-download{suffix}")
    if variant == "int8":
        st.caption(int8_cost(path))
    return True


def int8_cost(path: Path) -> str:
    """One sentence on an int8 file: its size against fp32 and how far it moves ``value`` on the probe images."""
    stat = path.stat()
    q = _quantization(str(path), stat.st_mtime_ns, stat.st_size)
    if q is None:
        return f"int8, {stat.st_size / 1e6:.1f} MB (its metadata cannot be read here: the onnx package is missing)."
    unit = f" {q['unit']}" if q.get("unit") else ""
    return (f"int8: {stat.st_size / 1e6:.1f} MB against {q['fp32_bytes'] / 1e6:.1f} MB in fp32; its value moves by "
            f"{q['mean_abs_change']:.3g}{unit} on average (max {q['max_abs_change']:.3g}{unit}) against fp32 on "
            f"{q['probe_images']} synthetic probe images (a rough guide, not an accuracy on photos).")


@st.cache_data(show_spinner=False, max_entries=64)
def _quantization(path: str, mtime_ns: int, size: int) -> dict | None:
    return lib.onnx_quantization(path)


def build_onnx(entry: lib.LibraryEntry, path, variant: str = "fp32") -> None:
    """Export ``entry`` to ``path`` (atomically) on its loaded backbone, with a spinner that counts the seconds."""
    from explorer.store.onnx_export import PROBE_IMAGES, export_onnx

    ckpt = resources.load_checkpoint(entry)
    handle = resources.backbone_for(entry)
    what = "tracing the image tower" if variant == "fp32" else \
        f"tracing the image tower, quantising its weights, then running both files on {PROBE_IMAGES} probe images"
    with st.spinner(f"Exporting {entry.name} to ONNX {variant} ({what}; a real backbone takes seconds)…", show_time=True):
        with handle.use() as backbone:
            export_onnx(ckpt, path, backbone=backbone, quantize=None if variant == "fp32" else variant)


def _upload_form() -> None:
    uploaded = st.file_uploader("Upload a checkpoint file", type=UPLOAD_TYPES, key="library-upload",
                                help="Explorer checkpoints are .safetensors files; pickles are never loaded.")
    if uploaded is None:
        return
    entry = add_upload(uploaded.getvalue(), uploaded.name)
    _report_added(entry)


def add_upload(data: bytes, filename: str) -> lib.LibraryEntry:
    """Store uploaded bytes in the cache folder and add them to this session's library when usable."""
    from explorer.core.errors import ExplorerError

    try:
        path = lib.store_upload(data, filename)
    except ExplorerError as exc:
        return lib.LibraryEntry(settings.cache_folder() / filename, "error", str(exc), source="added")
    entry = listing.add_checkpoint_path(path)
    if not entry.ok:  # keep the cache folder free of rejected files
        path.unlink(missing_ok=True)
    return entry


def _path_form() -> None:
    with st.form("library-add-path", clear_on_submit=False, border=False):
        text = st.text_input("…or give the path of a checkpoint on the server", key="library-path",
                             placeholder="/path/to/checkpoint.safetensors")
        submitted = st.form_submit_button("Add")
    if submitted and text.strip():
        _report_added(listing.add_checkpoint_path(text.strip()))


def _report_added(entry: lib.LibraryEntry) -> None:
    if entry.ok:
        extra = f" (note: {entry.backbone_note})" if entry.backbone_ok is False else ""
        st.success(f"Added {entry.name}: {entry.num_ranks} ranks, {entry.method} method{extra}.")
    elif entry.status == "not_checkpoint":
        st.warning(entry.message)
    else:
        st.error(entry.message)


if __name__ == "__main__":
    errors.run_page(library_page)
