"""The app under load: the server's memory while sessions visit checkpoints on many backbones.

    .venv/bin/python benchmarks/bench_memory.py [--backbones 6] [--rounds 2] [--max-backbones 2] [--sessions 4]

A real ``streamlit run app.py`` server (``ORDINAL_EXPLORER_MAX_BACKBONES=2``, CPU) and a real headless
Chromium (Playwright, /usr/bin/chromium). Nothing is downloaded: six ViT-B-32-sized backbones are
``open_clip.create_model("ViT-B-32")`` with seeded random weights, saved as fp32 safetensors and used
as ``ViT-B-32@PATH`` specs, each with a rank-learner (OrdinalCLIP) checkpoint, all made once in
``.cache/bench-memory``.

Each round visits, for every checkpoint in turn, Predict (one image uploaded, until its chart is
drawn) and the Interpolation lab (until its charts are drawn), in one browser session. The server's
resident memory (VmRSS of its process) is read when idle (started, the Library listed afresh, which
imports torch, with a checkpoint active whose backbone is missing: no backbone loaded), after every visit and sampled every 0.1 s for the peak. Then ``--sessions`` browser sessions
upload an image on Predict at once, each for a checkpoint on another backbone, and must all get
their chart.

Goal (issue): the peak stays within 3.5 backbones (fp32 parameter bytes) of the idle size and the
second round does not grow over the first.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_app  # noqa: E402  (the server and browser helpers)

WORK = REPO / ".cache" / "bench-memory"
CHART = '[data-testid="stPlotlyChart"]'
MB = 2**20


def make_backbones(count: int) -> tuple[list[str], int]:
    """``count`` ViT-B-32 backbones with seeded random weights and a rank checkpoint on each;
    returns the checkpoint names and one backbone's fp32 parameter bytes."""
    import open_clip
    import torch
    from app_testdata import build, dots_ranks
    from safetensors.torch import save_file

    from explorer.backbones.load import load_backbone
    from explorer.store.checkpoints import save_checkpoint

    (WORK / "weights").mkdir(parents=True, exist_ok=True)
    (WORK / "library").mkdir(parents=True, exist_ok=True)
    names, size = [], 0
    for i in range(count):
        path, name = WORK / "weights" / f"vitb32-random-{i}.safetensors", f"vitb32-{i}-rank"
        names.append(name)
        ckpt = WORK / "library" / f"{name}.safetensors"
        if not path.is_file():
            torch.manual_seed(1000 + i)
            model = open_clip.create_model("ViT-B-32", pretrained=None, load_weights=False)
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path),
                      metadata={"arch": "ViT-B-32", "seed": str(1000 + i)})
            del model
        if not ckpt.is_file() or not size:
            backbone = load_backbone(f"ViT-B-32@{path}", device="cpu")
            size = sum(p.numel() * 4 for p in backbone.model.parameters())
            if not ckpt.is_file():
                save_checkpoint(ckpt, build("rank", ranks=dots_ranks(), seed=i, backbone=backbone), backbone, name=name)
            del backbone
    idle = WORK / "library" / "idle-no-backbone.safetensors"
    if not idle.is_file():  # the idle page's active checkpoint: its backbone file is missing, so nothing loads
        import dataclasses

        from app_testdata import demo_backbone

        lost = dataclasses.replace(demo_backbone(), spec="ordinalclip-demo@/nonexistent/idle.safetensors")
        save_checkpoint(idle, build("rank", seed=99), lost, name="idle-no-backbone")
    return names, size


def rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Sampler(threading.Thread):
    """The peak RSS of a process, sampled every 0.1 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.1)

    def take_peak(self) -> int:
        peak, self.peak = self.peak, rss(self.pid)
        return max(peak, self.peak)


def wait_done(page, charts: int, timeout_ms: int = 300_000) -> None:
    page.wait_for_function(bench_app.DONE_JS, arg=charts, timeout=timeout_ms, polling=200)


def upload(page, image: Path) -> None:
    bench_app.settle(page)
    page.evaluate(bench_app.STATE_JS)
    page.locator('input[type="file"]').first.set_input_files(str(image))


def visit_predict(page, url: str, name: str, image: Path) -> None:
    page.goto(f"{url}/predict?checkpoint={name}", wait_until="domcontentloaded")
    page.get_by_text(f"{name} predicts", exact=False).first.wait_for(timeout=300_000)
    upload(page, image)
    wait_done(page, 1)
    bench_app.check_no_exception(page)


def visit_lab(page, url: str, name: str) -> None:
    page.goto(f"{url}/lab?checkpoint={name}", wait_until="domcontentloaded")
    page.locator(CHART).nth(4).wait_for(timeout=300_000)  # weights, 4 heatmaps (stored + 3 schemes); then adjacent
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .main-svg').length >= 6",
                           timeout=300_000, polling=200)
    bench_app.check_no_exception(page)


def concurrent_sessions(browser, url: str, names: list[str], image: Path) -> tuple[int, float]:
    """One session per name uploads an image on Predict at once; (sessions with a chart, seconds)."""
    pages = [browser.new_page(viewport={"width": 1280, "height": 1000}) for _ in names]
    for page, name in zip(pages, names):
        page.goto(f"{url}/predict?checkpoint={name}", wait_until="domcontentloaded")
    for page, name in zip(pages, names):
        page.get_by_text(f"{name} predicts", exact=False).first.wait_for(timeout=300_000)
    t0 = time.perf_counter()
    for page in pages:
        upload(page, image)
    ok = 0
    for page in pages:
        wait_done(page, 1, timeout_ms=600_000)
        bench_app.check_no_exception(page)
        ok += page.locator(CHART).count() >= 1
    seconds = time.perf_counter() - t0
    for page in pages:
        page.close()
    return ok, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-backbones", type=int, default=2, help="ORDINAL_EXPLORER_MAX_BACKBONES of the server")
    parser.add_argument("--sessions", type=int, default=4, help="browser sessions predicting at once")
    args = parser.parse_args()

    from app_testdata import face_image, image_bytes
    from playwright.sync_api import sync_playwright

    t0 = time.perf_counter()
    names, size = make_backbones(args.backbones)
    print(f"{args.backbones} ViT-B-32 backbones + checkpoints ready ({time.perf_counter() - t0:.0f} s); "
          f"one backbone = {size / MB:.0f} MiB of fp32 parameters", flush=True)
    image = WORK / "face.png"
    image.write_bytes(image_bytes(face_image(400, 300)))
    os.environ.update(ORDINAL_EXPLORER_MAX_BACKBONES=str(args.max_backbones), ORDINAL_EXPLORER_DEVICE="cpu")
    bench_app.CKPTS, bench_app.CACHE, bench_app.BENCH = WORK / "library", WORK / "cache", WORK

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=bench_app.CHROMIUM, headless=True, args=bench_app.BROWSER_FLAGS)
        import shutil

        shutil.rmtree(WORK / "cache" / "library", ignore_errors=True)  # the listing reads the files: torch is imported
        server = bench_app.Server()
        page = browser.new_page(viewport={"width": 1440, "height": 1200})
        try:
            server.wait_healthy()
            page.goto(server.url + "/?checkpoint=idle-no-backbone", wait_until="domcontentloaded")
            page.locator('[data-testid="stDataFrame"]').first.wait_for(state="visible", timeout=300_000)
            bench_app.settle(page)
            start_s = time.perf_counter() - server.t0
            page.wait_for_timeout(1000)
            idle = rss(server.proc.pid)
            sampler = Sampler(server.proc.pid)
            sampler.start()
            print(f"server start to Library {start_s:.1f} s; idle RSS {idle / MB:.0f} MiB", flush=True)
            rounds = []
            for r in range(args.rounds):
                after = []
                t = time.perf_counter()
                for name in names:
                    visit_predict(page, server.url, name, image)
                    visit_lab(page, server.url, name)
                    after.append(rss(server.proc.pid))
                    print(f"  round {r + 1} {name}: RSS {after[-1] / MB:.0f} MiB (+{(after[-1] - idle) / size:.2f} backbones)", flush=True)
                peak = sampler.take_peak()
                rounds.append({"end": after[-1], "max_after_visit": max(after), "peak": peak, "seconds": time.perf_counter() - t})
            page.close()
            ok, seconds = concurrent_sessions(browser, server.url, names[: args.sessions], image)
            concurrent_peak = sampler.take_peak()
            sampler.stop.set()
        finally:
            server.stop()
        browser.close()

    print(f"\nbackbone size (fp32 parameters): {size / MB:.0f} MiB; idle RSS {idle / MB:.0f} MiB; "
          f"ORDINAL_EXPLORER_MAX_BACKBONES={args.max_backbones}")
    print(f"{'round':<6} {'end MiB':>8} {'max after visit':>16} {'peak MiB':>9} {'peak - idle':>12} {'seconds':>8}")
    for k, r in enumerate(rounds, 1):
        print(f"{k:<6} {r['end'] / MB:8.0f} {r['max_after_visit'] / MB:16.0f} {r['peak'] / MB:9.0f} "
              f"{(r['peak'] - idle) / size:9.2f} bb {r['seconds']:8.0f}")
    worst = max(r["peak"] for r in rounds)
    grew = (rounds[-1]["peak"] - rounds[0]["peak"]) / size if len(rounds) > 1 else 0.0
    print(f"peak over idle: {(worst - idle) / size:.2f} backbones (goal <= 3.5): {'OK' if worst - idle <= 3.5 * size else 'MISSED'}")
    print(f"last round vs first, peak: {grew:+.2f} backbones (goal: no growth, <= +0.25): {'OK' if grew <= 0.25 else 'MISSED'}")
    print(f"{args.sessions} sessions at once: {ok} of {args.sessions} got their chart in {seconds:.1f} s "
          f"(peak {(concurrent_peak - idle) / size:.2f} backbones over idle): {'OK' if ok == args.sessions else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
