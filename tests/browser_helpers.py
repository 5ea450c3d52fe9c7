"""What the browser test modules (test_app_browser.py, test_browser_analysis.py) share: waiting for a
Streamlit run, the page's title, no exception on the page."""

from __future__ import annotations

import re

from conftest import wait_for_streamlit
from playwright.sync_api import expect

CHART = '[data-testid="stPlotlyChart"]'
EXCEPTION = '[data-testid="stException"]'


def settle(page, timeout_ms: int = 60_000) -> None:
    """Wait for Streamlit to finish the current run (after an interaction)."""
    page.wait_for_timeout(300)
    wait_for_streamlit(page, timeout_ms)


def no_exception(page) -> None:
    """Neither an exception element nor a traceback on the page."""
    expect(page.locator(EXCEPTION)).to_have_count(0)
    expect(page.get_by_text("Traceback")).to_have_count(0)


def expect_title(page, text: str) -> None:
    """The page's title (h1) starts with ``text``."""
    expect(page.locator("h1").filter(has_text=re.compile(f"^{re.escape(text)}"))).to_be_visible(timeout=60_000)
