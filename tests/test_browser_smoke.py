"""Smoke test: the Streamlit app renders in headless Chromium and shows its library, without errors."""

import re

import pytest
from app_testdata import BAD, GOOD
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_app_root_renders_the_library(open_app, screenshot):
    page = open_app("/")

    expect(page).to_have_title("OrdinalCLIP Explorer")
    expect(page.locator('[data-testid="stSidebar"]').get_by_text("OrdinalCLIP Explorer")).to_be_visible(timeout=30_000)
    expect(page.locator("h1").filter(has_text=re.compile("^Library"))).to_be_visible(timeout=30_000)
    # The library table is a canvas grid; its cells are also written into the (hidden) table inside the
    # canvas. Its name column lists every checkpoint of the server's library folder (tests/app_testdata.py)
    # and every file there that cannot be used (browser tests that ran before may have added more).
    cells = page.locator('[data-testid="stDataFrame"] canvas td[role="gridcell"]')
    expect(cells.first).to_be_attached(timeout=30_000)
    names = {t.strip() for t in page.locator('[data-testid="stDataFrame"] canvas td[aria-colindex="1"]').all_text_contents()}
    assert set(GOOD) | set(BAD) <= names, sorted(names)
    expect(page.get_by_text(re.compile(r"^\d+ files cannot be used$"))).to_be_visible()
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    expect(page.get_by_text("Traceback")).to_have_count(0)

    path = screenshot(page)
    assert path.is_file() and path.stat().st_size > 0
