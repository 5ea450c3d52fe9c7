"""End to end in headless Chromium: a sweep started on the Train page runs on local worker processes,
its panel fills in, and Compare opens it with its table and curves; screenshots in test-artifacts/."""

from __future__ import annotations

import pytest
from browser_helpers import CHART, expect_title, no_exception, settle
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_a_sweep_from_the_train_page_to_compare(open_app, screenshot):
    page = open_app("/train")
    expect_title(page, "Train")
    page.get_by_text("A sweep", exact=True).click()
    settle(page)
    for label, value in (("Dataset", "dots:4:6"), ("Name", "browser-sweep"), ("Methods", "zeroshot,ordinalclip:linear"),
                         ("Shots per label", "2"), ("Seeds", "0"), ("Label shifts", "none")):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Epochs", exact=True).fill("2")
    page.get_by_label("Workers", exact=True).fill("2")
    page.get_by_role("button", name="Start sweep").click()
    expect(page.get_by_text("2 done, 0 running, 0 failed, 0 waiting")).to_be_visible(timeout=300_000)
    expect(page.get_by_role("cell", name="ordinalclip:linear")).to_be_visible(timeout=30_000)
    no_exception(page)
    screenshot(page, "train-sweep")

    page.goto(page.url.split("/train")[0] + "/compare?sweep-choice=browser-sweep")  # the choice is in the URL (a shared view)
    settle(page)
    expect_title(page, "Compare")
    expect(page.get_by_role("combobox", name="App sweep")).to_have_value("browser-sweep")
    expect(page.get_by_role("cell", name="zeroshot")).to_be_visible(timeout=60_000)
    expect(page.locator(CHART).filter(has=page.locator(".js-plotly-plot"))).not_to_have_count(0, timeout=60_000)
    expect(page.get_by_role("strong").filter(has_text="test MAE (expected rank)")).to_be_visible(timeout=60_000)
    no_exception(page)
    screenshot(page, "compare-sweep")
