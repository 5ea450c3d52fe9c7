"""End to end in headless Chromium: the analysis sections (decoding, joint map, reliability, curves);
screenshots in test-artifacts/screenshots/."""

from __future__ import annotations

import pandas as pd
import pytest
from browser_helpers import CHART, expect_title, no_exception, settle
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    """A very tall window: the analysis sections sit below the pages' other figures."""
    return {**browser_context_args, "viewport": {"width": 1440, "height": 4800}}


def _section(page, title: str, click: bool = False):
    """The on-request section ``title`` (an expander), clicked open when ``click``."""
    summary = page.locator('[data-testid="stExpander"] summary').filter(has_text=title)
    expect(summary).to_be_visible(timeout=60_000)
    if click:
        summary.click()
    return summary


def test_geometry_decoding_and_joint_map(open_app, screenshot):
    # the test library's checkpoints record no training run, so no default dataset: the map's comes from the URL
    # (typing into a section's field is tested on Decide's, tests/test_browser_decide.py)
    page = open_app("/geometry?checkpoint=dots-rank-linear&map-dataset=dots:20&open-decode=true&open-map=true")
    expect_title(page, "Geometry")
    _section(page, "Nearest words of the learned tokens")
    _section(page, "Images and prototypes in one map")
    settle(page)
    expect(page.get_by_text("Confusion matrix")).to_be_visible(timeout=60_000)
    expect(page.locator(CHART)).to_have_count(8, timeout=60_000)
    expect(page.get_by_role("button", name="All neighbours (CSV)")).to_be_visible()
    expect(page.get_by_role("button", name="Data (CSV)")).to_have_count(4)
    settle(page)
    no_exception(page)
    screenshot(page, "geometry-analysis")
    page.get_by_role("tab", name="Bases").click()
    settle(page)
    page.get_by_text("Nearest words of the learned tokens").scroll_into_view_if_needed()
    screenshot(page, "geometry-bases")


def test_compare_reliability_and_curves(open_app, screenshot, tmp_path):
    rows = [{"method": lr, "shots": s, "seed": k, "label_shift": "none",
             "mae_exp": base / (1 + 0.3 * i) + 0.05 * k, "acc_max": gain * (0.15 + 0.08 * i) + 0.02 * k}
            for lr, base, gain in (("zeroshot", 3.0, 0.8), ("ordinalclip:linear", 2.4, 1.0)) for i, s in enumerate((1, 2, 4, 8)) for k in (0, 1, 2)]
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    page = open_app("/compare")
    expect_title(page, "Compare")
    _section(page, "Calibration", click=True)  # the section computes once opened
    dataset = page.get_by_role("textbox", name="Dataset").first  # the calibration section's
    dataset.fill("dots:20")
    dataset.press("Enter")
    settle(page)
    box = page.get_by_role("textbox", name="Sweep folder")
    box.fill(str(tmp_path))
    box.press("Enter")
    settle(page)
    expect(page.get_by_role("strong").filter(has_text="test MAE (expected rank)")).to_be_visible(timeout=60_000)
    expect(page.locator(CHART)).to_have_count(7, timeout=60_000)  # 3 heatmaps, per-rank MAE, reliability, 2 curves
    no_exception(page)
    screenshot(page, "compare-analysis")


def test_box_selection_in_the_joint_map_shows_the_images_inside(open_app, screenshot):
    """Box-select a region of the images-and-prototypes map: the gallery below shows the selected images
    (one "Distribution" button each) and the region's metrics."""
    page = open_app("/geometry?checkpoint=dots-rank-linear&map-dataset=dots:20&open-map=true")  # the map's dataset from the URL
    expect_title(page, "Geometry")
    _section(page, "Images and prototypes in one map")
    settle(page)
    expect(page.get_by_text("Box- or lasso-select images in the 2-D map")).to_be_visible(timeout=60_000)
    chart = page.locator(CHART).nth(4)  # heatmap, violations, adjacent, projection, then the joint map
    chart.scroll_into_view_if_needed()
    chart.hover()
    chart.locator('[data-title="Box Select"]').click()
    area = chart.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(area["x"] + area["width"] * 0.02, area["y"] + area["height"] * 0.02)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] * 0.5, area["y"] + area["height"] * 0.98, steps=12)  # the left half
    page.mouse.up()
    settle(page)
    summary = page.get_by_text("selected images")
    expect(summary).to_be_visible(timeout=60_000)
    count = int(summary.inner_text().split()[0])
    assert 0 < count < 168  # some of the 168 test images, not all
    expect(page.get_by_role("button", name="Distribution")).to_have_count(min(count, 48))
    no_exception(page)
    screenshot(page, "geometry-map-selection")
