"""Benchmark the Streamlit app end to end (real server + headless Chromium) and print the figures.

    .venv/bin/python benchmarks/bench_app.py [--repeat 3] [--keep-cache] [--start-only [--starts 5]]
    .venv/bin/python benchmarks/bench_app.py --library-size 1000 [--starts 3] [--repeat 3]
    .venv/bin/python benchmarks/bench_app.py --shared-links [--repeat 2]

Targets (issue): server start -> Library rendered <= 5 s (warm); Geometry page of a 101-rank
checkpoint <= 1 s (warm); a UMAP view computed before, even before a restart, <= 1 s; Predict on the
demo backbone <= 0.5 s from upload to chart (one image).

What is measured (wall clock, in the browser):
- start: from spawning ``streamlit run app.py`` until the Library table is visible and the script
  run finished. "cold" is the first start of this run, "warm" a second start (OS file cache warm,
  projection cache on disk). ``--start-only`` measures only that: one cold start, then ``--starts``
  warm ones (median, min and max printed), and the share of it until the server answers /_stcore/health.
- geometry: a click on "Geometry" in the sidebar (from Library, same session, caches warm) until the
  script finished and the four Plotly charts are drawn.
- umap: a click on the UMAP button until the run finished and the chart is drawn: first ever
  (cold: numba compilation unless cached), again in the same server, and after a server restart
  (layout read from .cache/projections, umap not even imported).
- predict: set_input_files on the upload field until the distribution chart is drawn; a new image
  each time (nothing served from a cache), the previous one removed first (one image in the field).
  The first upload of a page load also loads plotly.js in the browser; it is reported separately.

- ``--library-size N``: a library of N checkpoints (copies of the bundled demo checkpoints, each
  rewritten with its own name and metrics by ``update_metadata``) plus four unusable files, in
  .cache/bench/library-N: server start to the drawn Library cold (no listing remembered) and warm
  (``--starts``), then in the warm session: a filter typed into the Library's filter box until the
  table is redrawn, Geometry from the Library and back; then the app's script alone on the Library
  (AppTest in a new process: its first run, imports included, and again), without the server and the browser.

- ``--shared-links``: what a shared URL does. For each page (Compare with two checkpoints, Geometry,
  the lab, Predict) a freshly started server on the bundled demo (checkpoints/), and the page's URL
  opened directly once the server answers /_stcore/health: until its title (the page's h1) is visible,
  until its first control (a widget label in the page), until its content is first drawn (the page's run over, no spinner
  in the page, every Plotly chart drawn), and until it is settled (the same for 0.5 s, with the backbone the sidebar
  warmed in the background shown as loaded); median of
  ``--repeat`` fresh servers each.

Checkpoints are written (once) on the demo backbone into .cache/bench/checkpoints; the app cache is
.cache/bench/cache (removed at the start unless --keep-cache, so "first UMAP" really is the first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

BENCH = REPO / ".cache" / "bench"
CKPTS = BENCH / "checkpoints"
CACHE = BENCH / "cache"
CHROMIUM = "/usr/bin/chromium"
CHART_SEL = '[data-testid="stPlotlyChart"]'
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHARED_LINKS = {"Compare": "/compare?checkpoints=ordinalclip-linear&checkpoints=coop", "Geometry": "/geometry?checkpoint=ordinalclip-linear",
                "Interpolation lab": "/lab?checkpoint=ordinalclip-linear", "Predict": "/predict?checkpoint=ordinalclip-linear"}
TARGETS = {**{f"shared link {p}: {what}": 1.5 for p in SHARED_LINKS for what in ("title", "controls")},
           **{f"shared link {p}: content": 6.0 for p in SHARED_LINKS},
           "start (warm)": 5.0, "library: start (warm)": 3.0, "geometry 101 ranks (warm)": 1.0, "umap after restart": 1.0, "umap again (same server)": 1.0,
           "predict one image": 0.5}

STATE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.__runs = [];
  if (window.__obs) window.__obs.disconnect();
  window.__obs = new MutationObserver(() => window.__runs.push(app.getAttribute('data-test-script-state')));
  window.__obs.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
DONE_JS = """(n) => {
  const r = window.__runs || [];
  const i = r.indexOf('running');
  if (i < 0 || !r.slice(i).includes('notRunning')) return false;
  const charts = document.querySelectorAll('[data-testid="stPlotlyChart"]');
  if (charts.length < n) return false;
  return Array.from(charts).every(c => c.querySelector('.main-svg'));
}"""


def make_checkpoints() -> None:
    CKPTS.mkdir(parents=True, exist_ok=True)
    if (CKPTS / "bench-ages-normal.safetensors").is_file():
        return
    from app_testdata import age_ranks, build, demo_backbone

    from explorer.store.checkpoints import save_checkpoint

    bb = demo_backbone()
    save_checkpoint(CKPTS / "bench-ages-normal.safetensors",
                    build("rank", ranks=age_ranks(), interpolation="normal", num_base_ranks=5, bandwidth=8.0, seed=1), bb,
                    name="bench-ages-normal")
    save_checkpoint(CKPTS / "bench-ages-linear.safetensors",
                    build("rank", ranks=age_ranks(), interpolation="linear", num_base_ranks=3, seed=2), bb, name="bench-ages-linear")
    save_checkpoint(CKPTS / "bench-dots-plain.safetensors", build("plain", seed=3), bb, name="bench-dots-plain")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, folder: Path = CKPTS):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "NUMBA_CACHE_DIR": str(REPO / ".cache" / "numba"),
               "ORDINAL_EXPLORER_CHECKPOINTS": str(folder), "ORDINAL_EXPLORER_CACHE": str(CACHE),
               "ORDINAL_EXPLORER_DEVICE": os.environ.get("ORDINAL_EXPLORER_DEVICE", "cpu"), "PYTHONUNBUFFERED": "1"}
        self.log = open(BENCH / "server.log", "a")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1", "--server.port", str(self.port),
             "--server.headless", "true", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=1) as r:
                    if r.read().strip() == b"ok":
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); see {BENCH / 'server.log'}")
            time.sleep(0.02)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def settle(page) -> None:
    """Wait until no script run is in progress (e.g. the rerun after the backbone finished loading)."""
    for _ in range(3):
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', state="attached", timeout=120_000)
        page.wait_for_timeout(150)


def timed_click(page, locator, charts: int, timeout_ms: int = 120_000) -> float:
    settle(page)
    page.evaluate(STATE_JS)
    t0 = time.perf_counter()
    locator.click()
    page.wait_for_function(DONE_JS, arg=charts, timeout=timeout_ms, polling="raf")
    return time.perf_counter() - t0


def check_no_exception(page) -> None:
    if page.locator('[data-testid="stException"]').count():
        raise RuntimeError("an exception element is on the page")


def start_and_open_library(browser, healthy: list | None = None, folder: Path = CKPTS,
                           checkpoint: str = "bench-ages-normal") -> tuple[Server, object, float]:
    server = Server(folder)
    server.wait_healthy()
    if healthy is not None:
        healthy.append(time.perf_counter() - server.t0)
    page = browser.new_page(viewport={"width": 1440, "height": 1200})
    page.goto(server.url + f"/?checkpoint={checkpoint}", wait_until="domcontentloaded")
    page.locator('[data-testid="stDataFrame"]').first.wait_for(state="visible", timeout=120_000)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', state="attached", timeout=120_000)
    seconds = time.perf_counter() - server.t0
    check_no_exception(page)
    return server, page, seconds


def nav(page, title: str):
    return page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True)


def start_only(starts: int) -> dict[str, float]:
    """Server start to the drawn Library page: one cold start, then ``starts`` warm ones."""
    from playwright.sync_api import sync_playwright

    seconds, healthy = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
        for _ in range(starts + 1):
            server, page, took = start_and_open_library(browser, healthy)
            seconds.append(took)
            page.close()
            server.stop()
        browser.close()
    warm = seconds[1:]
    return {"start (cold)": seconds[0], "start (warm)": statistics.median(warm), "start (warm, min)": min(warm),
            "start (warm, max)": max(warm), "of which until /_stcore/health (warm, median)": statistics.median(healthy[1:])}


def make_large_library(size: int) -> Path:
    """``size`` checkpoints (the bundled demo ones, each rewritten with its own name and metrics) and
    four unusable files in .cache/bench/library-<size> (written once)."""
    folder = BENCH / f"library-{size}"
    done = folder / ".complete"
    if done.is_file():
        return folder
    from explorer.store.checkpoints import update_metadata

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sources = sorted(p for p in (REPO / "checkpoints").glob("*.safetensors") if p.name != "demo-backbone.safetensors")
    for i in range(size):
        name = f"run-{i:04d}-{sources[i % len(sources)].stem}"
        path = folder / f"{name}.safetensors"
        shutil.copyfile(sources[i % len(sources)], path)
        update_metadata(path, name=name, metrics={"test": {"mae_exp": 1 + (i % 97) / 10, "acc_max": (i % 50) / 100}})
    (folder / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00this is not json at all")
    whole = sources[0].read_bytes()
    (folder / "truncated.safetensors").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.pth").write_bytes(b"")
    (folder / "notes.bin").write_bytes(b"plain text, not weights")
    done.write_text(str(size))
    return folder


def library_size(size: int, starts: int, repeat: int) -> dict[str, float]:
    """A library of ``size`` checkpoints: cold and warm starts, a filter, Geometry from the Library and back."""
    from playwright.sync_api import sync_playwright

    folder = make_large_library(size)
    checkpoint = "run-0001-numclip"
    results: dict[str, float] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
        seconds = []
        for k in range(starts + 1):
            server, page, took = start_and_open_library(browser, folder=folder, checkpoint=checkpoint)
            seconds.append(took)
            if k < starts:
                page.close()
                server.stop()
        try:
            results.update({"library: start (cold)": seconds[0], "library: start (warm)": statistics.median(seconds[1:]),
                            "library: start (warm, min)": min(seconds[1:]), "library: start (warm, max)": max(seconds[1:])})
            results.update(library_interactions(page, repeat))
        finally:
            page.close()
            server.stop()
        browser.close()
    results.update(library_script_runs(folder, checkpoint, size + 4, repeat))
    return results


SCRIPT_RUNS = """
import json, statistics, sys, time
sys.path.insert(0, {repo!r})
from streamlit.testing.v1 import AppTest
t0 = time.perf_counter()
at = AppTest.from_file({app!r}, default_timeout=300)
at.query_params["checkpoint"] = {checkpoint!r}
at.run()
first = time.perf_counter() - t0
assert not at.exception and len(at.dataframe[0].value) == {rows}, [e.value for e in at.exception]
again = []
for _ in range({repeat}):
    t0 = time.perf_counter()
    at.run()
    again.append(time.perf_counter() - t0)
print(json.dumps({{"first": first, "again": statistics.median(again)}}))
"""


def library_script_runs(folder: Path, checkpoint: str, rows: int, repeat: int) -> dict[str, float]:
    """The Library page's script alone (AppTest in a new process, listing remembered on disk): the first
    run of the process (imports included) and the median of ``repeat`` more."""
    import json

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ORDINAL_EXPLORER_CHECKPOINTS": str(folder), "ORDINAL_EXPLORER_CACHE": str(CACHE),
           "ORDINAL_EXPLORER_DEVICE": os.environ.get("ORDINAL_EXPLORER_DEVICE", "cpu")}
    code = SCRIPT_RUNS.format(repo=str(REPO), app=str(REPO / "app.py"), checkpoint=checkpoint, rows=rows, repeat=repeat)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True)
    runs = json.loads(out.stdout.strip().splitlines()[-1])
    return {"library: script run, first of a process (AppTest)": runs["first"], "library: script run again (AppTest)": runs["again"]}


def library_interactions(page, repeat: int) -> dict[str, float]:
    """In a started session on the Library: a filter until the table is redrawn, Geometry and back."""
    out: dict[str, float] = {}
    box = page.locator('input[aria-label="Filter"]')
    if box.count():
        times = []
        for k in range(repeat):
            settle(page)
            page.evaluate(STATE_JS)
            t0 = time.perf_counter()
            box.first.fill(f"run-0{k}")
            box.first.press("Enter")
            page.wait_for_function(DONE_JS, arg=0, timeout=120_000, polling="raf")
            times.append(time.perf_counter() - t0)
        out["library: filter typed -> table redrawn"] = statistics.median(times)
    geometry, library = [], []
    for _ in range(repeat):
        geometry.append(timed_click(page, nav(page, "Geometry"), 4))
        library.append(timed_click(page, nav(page, "Library"), 0))
        page.locator('[data-testid="stDataFrame"]').first.wait_for(state="visible", timeout=120_000)
    out["library: Geometry from the Library"] = statistics.median(geometry)
    out["library: back to the Library"] = statistics.median(library)
    check_no_exception(page)
    return out


CONTENT_JS = """(settled) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return false;
  // the page's run is over: no run in progress, or (drawn) the sidebar's backbone line, which app.py draws after the page
  // (that line is a fragment that redraws itself every 0.5 s while the backbone warms, and until the next run of the page)
  const line = Array.from(document.querySelectorAll('[data-testid="stSidebar"] p')).find(p => p.textContent.startsWith('Backbone:'));
  if (app.getAttribute('data-test-script-state') !== 'notRunning' && !line) return false;
  if (document.querySelector('[data-testid="stMain"] [data-testid="stSpinner"]')) return false;
  if (settled && (!line || line.textContent.includes('loading'))) return false;
  return Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]')).every(c => c.querySelector('.main-svg'));
}"""


def open_shared_link(browser, title: str, path: str) -> tuple[float, float, float, float]:
    """A fresh server on the bundled demo; ``path`` opened once it is healthy: seconds to the page's
    title, to its first control (a widget's label), to its content first drawn (no run in progress, no
    spinner, every chart drawn) and until that has held for 0.5 s (settled)."""
    server = Server(REPO / "checkpoints")
    try:
        server.wait_healthy()
        page = browser.new_page(viewport={"width": 1440, "height": 1200})
        t0 = time.perf_counter()
        page.goto(server.url + path, wait_until="commit")
        page.locator("h1").filter(has_text=title).first.wait_for(state="visible", timeout=120_000)
        title_s = time.perf_counter() - t0
        page.locator('[data-testid="stMain"] [data-testid="stWidgetLabel"]').first.wait_for(state="visible", timeout=120_000)
        controls_s = time.perf_counter() - t0
        page.wait_for_function(CONTENT_JS, arg=False, timeout=120_000, polling="raf")
        content_s = time.perf_counter() - t0
        while True:
            page.wait_for_function(CONTENT_JS, arg=True, timeout=120_000, polling="raf")
            settled_s = time.perf_counter() - t0
            page.wait_for_timeout(500)  # a rerun (the backbone loaded in the background) starts within this
            if page.evaluate(CONTENT_JS, True):
                break
        check_no_exception(page)
        page.close()
        return title_s, controls_s, content_s, settled_s
    finally:
        server.stop()


def shared_links(repeat: int) -> dict[str, float]:
    """Each page of SHARED_LINKS opened directly on ``repeat`` freshly started servers (median)."""
    from playwright.sync_api import sync_playwright

    from explorer.store.library_index import FolderIndex

    FolderIndex(REPO / "checkpoints", CACHE).entries()  # the listing a server that ran before remembers (what is timed is the page)
    out: dict[str, float] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
        for title, path in SHARED_LINKS.items():
            runs = [open_shared_link(browser, title, path) for _ in range(repeat)]
            out[f"shared link {title}: title"] = statistics.median(r[0] for r in runs)
            out[f"shared link {title}: controls"] = statistics.median(r[1] for r in runs)
            out[f"shared link {title}: content"] = statistics.median(r[2] for r in runs)
            out[f"shared link {title}: settled"] = statistics.median(r[3] for r in runs)
        browser.close()
    return out


def report(results: dict[str, float]) -> None:
    width = max(len(k) for k in results)
    print(f"{'measurement':<{width}}  seconds  target")
    for key, value in results.items():
        target = TARGETS.get(key)
        verdict = "" if target is None else f"<= {target:g} s  {'OK' if value <= target else 'MISSED'}"
        print(f"{key:<{width}}  {value:7.3f}  {verdict}")
    cpu = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"(machine: {cpu} CPUs, load average {load:.1f}; device {os.environ.get('ORDINAL_EXPLORER_DEVICE', 'cpu')})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the warm measurements (median reported)")
    parser.add_argument("--keep-cache", action="store_true", help="keep .cache/bench/cache (UMAP layouts) from a previous run")
    parser.add_argument("--start-only", action="store_true", help="measure only server start to the drawn Library page")
    parser.add_argument("--starts", type=int, default=5, help="warm starts measured with --start-only / --library-size")
    parser.add_argument("--library-size", type=int, default=0, help="measure a library of this many checkpoints instead")
    parser.add_argument("--shared-links", action="store_true", help="measure pages opened directly on a fresh server")
    args = parser.parse_args()
    if args.shared_links:
        BENCH.mkdir(parents=True, exist_ok=True)
        report(shared_links(args.repeat))
        return 0
    if args.library_size:
        BENCH.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(CACHE, ignore_errors=True)
        report(library_size(args.library_size, args.starts, args.repeat))
        return 0
    if args.start_only:
        BENCH.mkdir(parents=True, exist_ok=True)
        if not args.keep_cache:
            shutil.rmtree(CACHE, ignore_errors=True)
        make_checkpoints()
        report(start_only(args.starts))
        return 0

    from app_testdata import face_image, image_bytes
    from playwright.sync_api import sync_playwright

    BENCH.mkdir(parents=True, exist_ok=True)
    if not args.keep_cache:
        shutil.rmtree(CACHE, ignore_errors=True)
    make_checkpoints()
    results: dict[str, float] = {}
    faces_dir = BENCH / "faces"
    faces_dir.mkdir(exist_ok=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
        # 1st server: cold start, warm geometry, first UMAP, predict
        server, page, seconds = start_and_open_library(browser)
        results["start (cold)"] = seconds
        try:
            page.locator('[data-testid="stSidebar"]').get_by_text("on cpu").wait_for(timeout=120_000)  # backbone loaded
            results["geometry 101 ranks (first visit)"] = timed_click(page, nav(page, "Geometry"), 4)
            times = []
            for _ in range(args.repeat):
                timed_click(page, nav(page, "Library"), 0)
                times.append(timed_click(page, nav(page, "Geometry"), 4))
            results["geometry 101 ranks (warm)"] = statistics.median(times)
            check_no_exception(page)
            umap_button = page.get_by_text("UMAP", exact=True)
            pca_button = page.get_by_text("PCA", exact=True)
            results["umap first (cold numba cache?)"] = timed_click(page, umap_button, 4)
            timed_click(page, pca_button, 4)
            results["umap again (same server)"] = timed_click(page, umap_button, 4)
            timed_click(page, pca_button, 4)
            check_no_exception(page)

            timed_click(page, nav(page, "Predict"), 0)
            times = []
            for k in range(args.repeat + 1):  # the first upload of the session also loads plotly.js in the page
                if k:  # remove the previous image: one image in the uploader each time
                    page.locator('[data-testid="stFileChipDeleteBtn"] button').first.click()
                    page.locator(CHART_SEL).first.wait_for(state="detached", timeout=60_000)
                    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', state="attached")
                    page.wait_for_timeout(300)
                path = faces_dir / f"face-{k}.png"
                path.write_bytes(image_bytes(face_image(400 + 8 * k, 300 + 4 * k)))
                settle(page)
                page.evaluate(STATE_JS)
                t0 = time.perf_counter()
                page.locator('input[type="file"]').first.set_input_files(str(path))
                page.wait_for_function(DONE_JS, arg=1, timeout=120_000, polling="raf")
                times.append(time.perf_counter() - t0)
            results["predict one image (first)"] = times[0]
            results["predict one image"] = statistics.median(times[1:])
            check_no_exception(page)
        finally:
            page.close()
            server.stop()

        # 2nd server: warm start, UMAP read from disk
        server, page, seconds = start_and_open_library(browser)
        results["start (warm)"] = seconds
        try:
            timed_click(page, nav(page, "Geometry"), 4)
            results["umap after restart"] = timed_click(page, page.get_by_text("UMAP", exact=True), 4)
            check_no_exception(page)
        finally:
            page.close()
            server.stop()
        browser.close()

    report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
