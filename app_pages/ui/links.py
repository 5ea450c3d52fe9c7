"""Shareable views: the URL of what the page shows now (its path, the checkpoints it names and every
choice bound to the URL), offered as a link to copy on every page."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import streamlit as st


def view_url() -> str:
    """The page's URL with every query parameter it holds now (relative, ``?…``, when the browser's is unknown)."""
    pairs = [(k, v) for k in st.query_params for v in st.query_params.get_all(k)]
    query = urlencode(pairs, quote_via=quote, safe=":/,")
    return (st.context.url or "") + (f"?{query}" if query else "")


def share_link() -> None:
    """"Copy link": the view's URL in a code box (its copy button on the right); opening it in another
    browser restores the page, checkpoints, dataset and choices."""
    st.markdown(":material/link: **Copy link** to this view",
                help="Opening this link in another browser shows the same page, checkpoints, dataset and choices.")
    st.code(view_url(), language=None, wrap_lines=True)
