"""End to end: the real ``streamlit run app.py`` in headless Chromium, on the test library
(``app_library_dir``: demo-backbone checkpoints plus bad files). Every page renders without an
exception element; uploads go through the real file input. Screenshots land in
test-artifacts/screenshots/.
"""

from __future__ import annotations

import pytest
from app_testdata import face_image, image_bytes, plain_image
from browser_helpers import CHART, expect_title, no_exception, settle
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PAGES = {
    "/": "Library",
    "/geometry": "Geometry",
    "/lab": "Interpolation lab",
    "/compare": "Compare",
    "/predict": "Predict",
    "/train": "Train",
    "/models": "Models",
}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    """A tall window so that full-page screenshots show whole pages (Streamlit scrolls inside its main block)."""
    return {**browser_context_args, "viewport": {"width": 1440, "height": 3000}}


def _sidebar_backbone(page) -> None:
    side = page.locator('[data-testid="stSidebar"]')
    expect(side.get_by_text("on cpu")).to_be_visible(timeout=60_000)
    expect(side.get_by_text("demo backbone is in use")).to_be_visible()


def test_library_lists_checkpoints_and_bad_files(open_app, screenshot):
    page = open_app("/")
    expect_title(page, "Library")
    expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
    page.get_by_text("cannot be used").click()
    expect(page.get_by_text("would import and call")).to_be_visible()
    expect(page.get_by_text("not an explorer checkpoint").first).to_be_visible()
    _sidebar_backbone(page)
    no_exception(page)
    screenshot(page, "library")


@pytest.mark.parametrize("path", [p for p in PAGES if p != "/"])
def test_every_page_renders(open_app, screenshot, path):
    page = open_app(f"{path}?checkpoint=ages-rank-normal")
    expect_title(page, PAGES[path])
    if path in ("/geometry", "/lab", "/compare"):
        expect(page.locator(CHART).first).to_be_visible(timeout=60_000)
        settle(page)
    _sidebar_backbone(page)
    no_exception(page)
    screenshot(page, path.strip("/"))


def test_sidebar_navigation_keeps_the_active_checkpoint(open_app):
    page = open_app("/?checkpoint=dots-rank-linear")
    side = page.locator('[data-testid="stSidebar"]')
    expect(side.get_by_text("Active checkpoint: dots-rank-linear")).to_be_visible()  # (the Copy link URL names it too)
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Geometry").click()
    expect_title(page, "Geometry")
    expect(page.locator(CHART).first).to_be_visible(timeout=60_000)
    expect(side.get_by_text("Active checkpoint: dots-rank-linear")).to_be_visible()
    no_exception(page)


def test_predict_upload_shows_distribution(open_app, screenshot, tmp_path):
    page = open_app("/predict?checkpoint=ages-rank-normal")
    expect_title(page, "Predict")
    face = tmp_path / "face.jpg"
    face.write_bytes(image_bytes(face_image(), "JPEG", quality=92))
    page.locator('input[type="file"]').first.set_input_files(str(face))
    expect(page.locator(CHART).first).to_be_visible(timeout=60_000)
    settle(page)
    expect(page.get_by_text("Face found")).to_be_visible()
    expect(page.get_by_text("Expected value")).to_be_visible()
    expect(page.get_by_text("90 % interval")).to_be_visible()
    no_exception(page)
    screenshot(page, "one-face")


def test_predict_many_uploads_with_a_bad_one(open_app, screenshot, tmp_path):
    page = open_app("/predict?checkpoint=dots-rank-linear")
    expect_title(page, "Predict")
    files = [tmp_path / "face.png", tmp_path / "grass.webp", tmp_path / "notes.png", tmp_path / "empty.bmp"]
    files[0].write_bytes(image_bytes(face_image()))
    files[1].write_bytes(image_bytes(plain_image(), "WEBP"))
    files[2].write_bytes(b"this is a text file, not a picture")
    files[3].write_bytes(b"")
    page.locator('input[type="file"]').first.set_input_files([str(f) for f in files])
    expect(page.locator(CHART).first).to_be_visible(timeout=60_000)
    settle(page)
    expect(page.get_by_role("paragraph").filter(has_text="notes.png is not an image")).to_be_visible()
    expect(page.get_by_text("Download CSV")).to_be_visible()
    expect(page.locator('[data-testid="stDataFrame"]')).to_be_visible()
    no_exception(page)
    screenshot(page, "many")
    # dots is a whole-image checkpoint: no face cropping unless asked for
    expect(page.get_by_text("Whole image used").first).to_be_visible()


def test_library_upload_of_a_pickle_is_refused(open_app, screenshot, app_library_dir):
    page = open_app("/")
    expect_title(page, "Library")
    page.locator('input[type="file"]').first.set_input_files(str(app_library_dir / "evil.pt"))
    expect(page.get_by_text("would import and call").last).to_be_visible(timeout=60_000)
    settle(page)
    no_exception(page)
    screenshot(page, "evil-upload")


def test_compare_overlays_distributions_for_one_image(open_app, screenshot, tmp_path):
    page = open_app("/compare")
    expect_title(page, "Compare")
    face = tmp_path / "face.png"
    face.write_bytes(image_bytes(face_image()))
    # the page has two uploaders (this image, and a sweep's runs.csv further down): use the image's
    image_input = page.get_by_role("region", name="Image").locator('input[type="file"]')
    expect(image_input).to_have_count(1, timeout=60_000)
    assert ".png" in (image_input.get_attribute("accept") or "")
    image_input.set_input_files(str(face))
    expect(page.get_by_text("Predicted distributions for the same image")).to_be_visible()
    # 3 heatmaps and the per-rank errors are there before the upload; the 5th chart is the overlay
    expect(page.locator(CHART).nth(4)).to_be_visible(timeout=60_000)
    settle(page)
    expect(page.get_by_text("Face found")).to_be_visible(timeout=60_000)
    no_exception(page)
    screenshot(page, "same-image")


@pytest.fixture
def trained_runs_removed(app_library_dir):
    """Runs trained from the Train page land in the shared test library: remove them afterwards, so
    that the pages other tests open (e.g. Compare's default set) do not depend on test order."""
    before = set(app_library_dir.iterdir())
    yield
    for path in set(app_library_dir.iterdir()) - before:
        path.unlink(missing_ok=True)


@pytest.mark.usefixtures("trained_runs_removed")
def test_train_a_tiny_run_to_completion_and_see_it_in_the_library(open_app, screenshot):
    page = open_app("/train")
    expect_title(page, "Train")
    page.get_by_label("Dataset", exact=True).fill("dots:3:6")
    page.get_by_label("Name", exact=True).fill("browserrun")
    page.get_by_label("Shots per label (0 = all)").fill("2")
    page.get_by_label("Epochs").fill("2")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("now in the Library")).to_be_visible(timeout=120_000)
    expect(page.locator('[data-testid="stProgress"]')).to_have_count(1)
    no_exception(page)
    screenshot(page, "finished")
    page.goto(page.url.split("/train")[0] + "/")
    settle(page)
    expect(page.get_by_text("browserrun").first).to_be_visible(timeout=60_000)
    no_exception(page)


@pytest.mark.usefixtures("trained_runs_removed")
def test_numclip_trained_in_the_app_renders_on_geometry_and_predict(open_app, screenshot, tmp_path):
    page = open_app("/train")
    expect_title(page, "Train")
    page.get_by_label("Dataset", exact=True).fill("dots:6:8")
    page.get_by_label("Name", exact=True).fill("browser-numclip")
    page.get_by_label("Epochs").fill("3")
    page.get_by_label("Method", exact=True).click()
    page.get_by_role("option", name="NumCLIP", exact=True).click()
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("now in the Library")).to_be_visible(timeout=180_000)
    no_exception(page)
    base = page.url.split("/train")[0]
    page.goto(base + "/geometry?checkpoint=browser-numclip")  # the run's name (its file: app-browser-numclip-<job id>)
    expect_title(page, "Geometry")
    expect(page.locator(CHART).first).to_be_visible(timeout=60_000)
    settle(page)
    no_exception(page)
    screenshot(page, "numclip-geometry")
    page.goto(base + "/predict?checkpoint=browser-numclip")
    expect_title(page, "Predict")
    image = tmp_path / "dots.png"
    image.write_bytes(image_bytes(plain_image()))
    page.locator('input[type="file"]').first.set_input_files(str(image))
    expect(page.locator(CHART).first).to_be_visible(timeout=60_000)
    settle(page)
    expect(page.get_by_text("Regressed value")).to_be_visible()
    expect(page.get_by_text("Top concepts")).to_be_visible()
    no_exception(page)
    screenshot(page, "numclip-predict")
