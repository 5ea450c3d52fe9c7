"""Error boundaries: a problem becomes one sentence (never a traceback); an error inside a section
only replaces that section."""

from __future__ import annotations

import contextlib
import logging
import traceback
from typing import Callable

import streamlit as st

from explorer.core.errors import ExplorerError, one_line

log = logging.getLogger("ordinalclip_explorer.app")


def report_exception(exc: Exception, where: str) -> None:
    """Show ``exc`` as one sentence (never a traceback); unexpected ones are logged with their traceback."""
    if isinstance(exc, ExplorerError):
        st.error(str(exc))
        return
    details = "".join(traceback.format_exception(exc))
    log.error("Unexpected error in %s:\n%s", where, details)
    st.error(f"Something went wrong in {where} ({type(exc).__name__}: {one_line(exc, 200)}); this is a bug, not something in your input.")
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
