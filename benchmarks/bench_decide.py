"""Decisions at a cut-point and the HTML report: how long the Decide section's numbers take for N images
(explorer.analysis.cuts.decision: the cut report with its bootstrap intervals, rates per slice, curves,
nearest images), and how long the report of K bundled checkpoints takes to build and how big it is.

    .venv/bin/python benchmarks/bench_decide.py [--sizes 1000,10000,50000] [--checkpoints 2,7]

Prints a table and one line ``JSON {...}`` with the figures. Synthetic probabilities over ranks 0-100
(years) for the decisions; the bundled demo checkpoints on dots:20 (test split, demo backbone) for
the report (its evaluation timed apart from building the HTML).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.analysis import cuts  # noqa: E402
from explorer.core.ranks import Ranks  # noqa: E402

DEMO = ["ordinalclip-linear", "coop", "numclip", "ordinalclip-inv_prop", "ordinalclip-normal", "zero-shot", "ordinalclip-linear-16shot"]


class _Ranked:
    """A predictor with one class per rank (what cuts.decision reads of a predictor)."""

    def __init__(self, ranks):
        self.ranks = self.classes = ranks

    def class_targets(self, labels):
        return np.asarray(labels)


def decision_seconds(n: int, seed: int = 0) -> float:
    """Seconds of one cuts.decision at 18 years over n images with a 4-valued slice field."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 101, n)
    probs = rng.dirichlet(np.full(101, 0.3), n)
    samples = [SimpleNamespace(fields={"site": "abcd"[i % 4]}) for i in range(n)]
    start = time.perf_counter()
    cuts.decision({"labels": labels, "probs": probs}, _Ranked(Ranks.integers(101, unit="years")), 18, 0.95, samples, ["site"])
    return time.perf_counter() - start


def report_figures(count: int, cache: str) -> dict:
    """Evaluate ``count`` bundled checkpoints on dots:20 [test] with a cut, then build the report."""
    from explorer.analysis.comparison import compare_checkpoints
    from explorer.analysis.report import build_report
    from explorer.backbones.load import load_backbone
    from explorer.store.checkpoints import load_checkpoint

    backbone = load_backbone("demo", device="cpu")
    models = [(load_checkpoint(ROOT / "checkpoints" / f"{n}.safetensors"), backbone) for n in DEMO[:count]]
    start = time.perf_counter()
    comparison = compare_checkpoints(models, "dots:20", cuts=[10], cache_dir=cache, keep_predictions=True)
    evaluated = time.perf_counter() - start
    start = time.perf_counter()
    text = build_report(comparison)
    return {"checkpoints": count, "evaluate_s": evaluated, "build_s": time.perf_counter() - start, "mb": len(text.encode()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="image counts for the decision timing")
    parser.add_argument("--checkpoints", default="2,7", help="how many bundled checkpoints the reports hold")
    args = parser.parse_args()
    decisions = {int(n): decision_seconds(int(n)) for n in args.sizes.split(",")}
    for n, seconds in decisions.items():
        print(f"cuts.decision, {n:>6} images: {seconds:.3f} s")
    with tempfile.TemporaryDirectory() as cache:
        reports = [report_figures(int(k), cache) for k in args.checkpoints.split(",")]
    for r in reports:
        print(f"report of {r['checkpoints']} checkpoints on dots:20 [test]: evaluate {r['evaluate_s']:.1f} s, "
              f"build {r['build_s']:.2f} s, {r['mb']:.2f} MB")
    print("JSON " + json.dumps({"decision_s": decisions, "reports": reports}))


if __name__ == "__main__":
    main()
