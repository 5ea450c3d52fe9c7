"""End to end in headless Chromium: a link copied from the sidebar opens the same view in a fresh
browser context, and the HTML report draws every chart with the network cut off and no console error.
Screenshots in test-artifacts/screenshots/."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from browser_helpers import CHART, expect_title, no_exception, settle
from conftest import wait_for_streamlit
from playwright.sync_api import expect

from explorer import cli

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1440, "height": 5000}  # the Decide section sits at the bottom of Geometry


def _link(page, *parts: str) -> str:
    """The URL in the sidebar's "Copy link" box, once it holds each of ``parts``."""
    box = page.locator('[data-testid="stSidebar"] [data-testid="stCode"]')
    for part in ("checkpoint=", *parts):
        expect(box).to_contain_text(part, timeout=60_000)
    return box.inner_text().strip()


def _selected(page, key: str) -> str:
    """The selected option of the segmented control with widget key ``key``."""
    return page.locator(f'.st-key-{key} [role="radio"][aria-checked="true"]').inner_text().strip()


def _view(page) -> dict:
    """What the Geometry page shows as chosen: checkpoint, heatmap view, dimensions, Decide's dataset and cut."""
    return {"checkpoint": page.locator(".st-key-geometry-checkpoint input").input_value().split("·")[0].strip(),
            "view": _selected(page, "geometry-view"), "dims": _selected(page, "geometry-dims"),
            "dataset": page.locator(".st-key-decide-dataset input").input_value(),
            "cut": page.locator('.st-key-decide-cut input[type="range"]').input_value(),
            "point": _selected(page, "decide-point")}


def test_a_shared_link_opens_the_same_view_in_a_fresh_browser(browser, streamlit_server, screenshot):
    first = browser.new_context(viewport=VIEWPORT)
    page = first.new_page()
    page.goto(f"{streamlit_server}/geometry?checkpoint=dots-plain", wait_until="domcontentloaded")
    wait_for_streamlit(page)
    expect_title(page, "Geometry")
    page.locator(".st-key-geometry-view").get_by_text("Softmax").click()
    settle(page)
    expect(page).to_have_url(re.compile("geometry-view=Softmax"))  # each choice in the URL before the next one
    page.locator(".st-key-geometry-dims").get_by_text("3-D").click()
    settle(page)
    expect(page).to_have_url(re.compile("geometry-dims=3"))
    page.locator(".st-key-open-decide summary").click()  # the section computes once opened; the URL says it is open
    settle(page)
    expect(page).to_have_url(re.compile("open-decide=true"))
    box = page.locator(".st-key-decide-dataset input")
    box.fill("dots:20")
    box.press("Enter")
    settle(page)
    thumb = page.locator('.st-key-decide-cut input[type="range"]')
    expect(thumb).to_be_attached(timeout=60_000)
    thumb.focus()
    for _ in range(3):  # 10 -> 7 dots
        thumb.press("ArrowLeft")
    settle(page)
    page.locator(".st-key-decide-point").get_by_text("P ≥ 0.5").click()
    settle(page)
    expect(page).to_have_url(re.compile("decide-point=P"))  # the last choice in the URL before the link is read
    chosen = _view(page)
    assert chosen == {"checkpoint": "dots-plain", "view": "Softmax", "dims": "3-D", "dataset": "dots:20", "cut": "7", "point": "P ≥ 0.5"}
    link = _link(page, "decide-point=P")
    assert link.startswith(f"{streamlit_server}/geometry?") and "decide-cut=7" in link and "geometry-dims=3" in link and "open-decide=true" in link, link
    first.close()

    fresh = browser.new_context(viewport=VIEWPORT)  # no cookies, no session: only the link
    other = fresh.new_page()
    other.goto(link, wait_until="domcontentloaded")
    wait_for_streamlit(other)
    expect(other.locator('.st-key-decide-cut input[type="range"]')).to_be_attached(timeout=60_000)
    settle(other)
    # the URL's dataset reaches the field's display a moment after the section used it (seen once empty right after a run)
    expect(other.locator(".st-key-decide-dataset input")).to_have_value(chosen["dataset"], timeout=30_000)
    assert _view(other) == chosen
    expect(other.get_by_text("Called below, just under").first).to_be_visible(timeout=60_000)
    expect(other.locator(CHART)).to_have_count(5, timeout=60_000)  # heatmap, violations, adjacent, projection, cut curves
    no_exception(other)
    screenshot(other, "shared-link")
    fresh.close()


def test_the_report_draws_every_chart_offline(browser, tmp_path, screenshot):
    out = tmp_path / "report.html"
    paths = [str(ROOT / "checkpoints" / f"{n}.safetensors") for n in ("ordinalclip-linear", "coop", "numclip")]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["report", *paths, "--on", "dots:20:4", "--split", "all", "--cut", "10", "--cache-dir", str(tmp_path / "cache"),
                         "--out", str(out), "--quiet"])
    assert code == 0
    context = browser.new_context(viewport={"width": 1300, "height": 900}, offline=True)
    requests, problems = [], []

    def block(route):  # every request but the file itself fails
        requests.append(route.request.url)
        route.continue_() if route.request.url == out.as_uri() else route.abort()

    context.route("**/*", block)
    page = context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(out.as_uri(), wait_until="load")
    figures = page.locator(".plotly-graph-div")
    expect(figures).to_have_count(len(re.findall('class="plotly-graph-div"', out.read_text(encoding="utf-8"))))
    for i in range(figures.count()):  # every figure drawn: plotly's SVG inside each one
        expect(figures.nth(i).locator(".main-svg").first).to_be_attached(timeout=30_000)
    assert figures.count() == 7  # calibration, slices, matrix, one cut, 3 heatmaps
    assert requests == [out.as_uri()] and problems == []
    screenshot(page, "report")
    context.close()
