"""Smoke test: the Streamlit app renders in headless Chromium without errors."""

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_app_root_renders(open_app, screenshot):
    page = open_app("/")

    expect(page.locator('[data-testid="stApp"]')).to_be_visible()
    expect(page.get_by_text("OrdinalCLIP Explorer").first).to_be_visible(timeout=30_000)
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)

    path = screenshot(page)
    assert path.is_file() and path.stat().st_size > 0
