"""What the AppTest modules (test_app*.py) share: open a page of the app, wait for the backbone, read
what a page shows. Their library and cache folders are the ``env`` fixture (conftest.py)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 120


def texts(at) -> str:
    """Every text element of the page (markdown, captions, messages, titles, metrics, expander labels), one per line."""
    parts = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "subheader", "metric", "expander"):
        for el in getattr(at, kind):
            parts.append(str(getattr(el, "value", "")) + " " + str(getattr(el, "label", "")))
    return "\n".join(parts)


def ok(at) -> AppTest:
    """``at`` after checking that the run raised nothing."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def plotly_charts(at) -> list:
    """The page's plotly charts."""
    return list(at.get("plotly_chart"))


def wait_for_backbone(at, seconds: float = 60) -> AppTest:
    """Rerun until the sidebar no longer says the backbone is loading (it loads in a thread)."""
    deadline = time.monotonic() + seconds
    while "loading…" in " ".join(m.value for m in at.sidebar.markdown) and time.monotonic() < deadline:
        time.sleep(0.2)
        at.run(timeout=TIMEOUT)
    return at


def open_page(env, page: str | None = None, checkpoint: str | None = None, opened: tuple[str, ...] = ()) -> AppTest:
    """A fresh session on ``page`` (``app_pages/<page>.py``; the Library when None), ``?checkpoint=`` set when given;
    the page's on-request sections named in ``opened`` (``"map"`` for ``open-map``) open, as a link would open them."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if checkpoint:
        at.query_params["checkpoint"] = checkpoint
    at.run()
    for name in opened:
        at.session_state[f"open-{name}"] = True
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    return ok(at)


@contextlib.contextmanager
def app_environment(folder: Path, cache: Path):
    """The app's library folder, cache folder and the CPU as its device, in the environment while the
    block runs; yields ``{"folder": folder, "cache": cache}`` (the ``env`` of open_page)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORDINAL_EXPLORER_CHECKPOINTS", str(folder))
        mp.setenv("ORDINAL_EXPLORER_CACHE", str(cache))
        mp.setenv("ORDINAL_EXPLORER_DEVICE", "cpu")
        yield {"folder": folder, "cache": cache}
