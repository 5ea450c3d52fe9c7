"""Benchmark: one sweep grid inline vs on local worker processes (the figures of benchmarks/README.md).

The grid: 2 methods x 3 shots x 3 seeds (18 runs) on the bundled ``dots:20`` task with the demo
backbone, frozen features (embedded once beforehand with ``embed --shards``, as docs/cluster.md
advises, so every variant only trains). Timed, each in a fresh sweep folder:

1. ``--executor inline``: this process, one run after another (one torch thread per core share:
   all cores);
2. ``--executor local --workers 2``: two worker processes, each with cores // 2 torch threads;
3. ``--executor local --workers 1``: one worker process, all cores' threads;
4. a submitit local job that does nothing: the round trip of one worker start.

The executor's cost per run is the wall time less the runs' own seconds (the trainer's clock, in
runs.csv), over the runs, per worker: process start, imports, backbone load, writing the run files,
the coordinator's polling and the tables. It holds up better on a shared machine than a difference
of two wall times.

Prints a table and one line ``JSON {...}``.

    .venv/bin/python benchmarks/bench_sweep.py [--epochs 10] [--methods coop,ordinalclip:linear] [--shots 1,2,4] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explorer.training.config import TrainConfig, parse_method_list, sweep_grid  # noqa: E402
from explorer.training.executors import cores, executor_spec, set_threads  # noqa: E402
from explorer.training.shards import EmbedJob, embed_sharded  # noqa: E402
from explorer.training.sweeps import sweep  # noqa: E402

DATASET = "dots:20"


def grid(folder: Path, cache: Path, args):
    base = TrainConfig(dataset=DATASET, out=str(folder / "run.safetensors"), epochs=args.epochs, device="cpu", cache_dir=str(cache))
    methods = parse_method_list(args.methods, {"num_context_tokens": 8})
    return sweep_grid(base, methods, [int(s) for s in args.shots.split(",")], [int(s) for s in args.seeds.split(",")], folder)


def timed_sweep(tmp: Path, cache: Path, name: str, args, executor: str, workers: int | None) -> tuple[float, dict, float]:
    """(wall seconds, the sweep's result, executor overhead per run in seconds)."""
    import pandas as pd

    folder = tmp / name
    start = time.perf_counter()
    result = sweep(grid(folder, cache, args), folder, executor=executor_spec(executor, workers))
    wall = time.perf_counter() - start
    runs = pd.read_csv(folder / "runs.csv")
    return wall, result, (wall * (workers or 1) - float(runs["seconds"].sum())) / len(runs)


def noop() -> int:
    return 0


def worker_round_trip(tmp: Path) -> float:
    """Seconds from submitting a local job that does nothing to seeing it finished."""
    import submitit

    executor = submitit.LocalExecutor(folder=str(tmp / "noop"))
    executor.update_parameters(timeout_min=10)
    start = time.perf_counter()
    job = executor.submit(noop)
    while not job.done():
        time.sleep(0.05)
    return time.perf_counter() - start


def inline_only(args) -> None:
    """Just the inline sweep (e.g. with --inline-threads 1, the threads each of 2 local workers gets here)."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cache = tmp / "features"
        embed_sharded(EmbedJob(DATASET, num_shards=2, cache_dir=str(cache), device="cpu"), executor_spec("inline"))
        set_threads(args.inline_threads or cores())
        wall, _, over = timed_sweep(tmp, cache, "inline", args, "inline", None)
    figures = {"inline_s": round(wall, 1), "threads": args.inline_threads or cores(), "overhead_per_run_s": round(over, 2),
               "load_avg_1min": os.getloadavg()[0]}
    print(f"inline, {figures['threads']} torch threads: {wall:.1f} s, overhead per run {over:.2f} s")
    print("JSON " + json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--methods", default="coop,ordinalclip:linear")
    parser.add_argument("--shots", default="1,2,4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--inline-threads", type=int, default=None, help="torch threads of the inline sweep (default: every core)")
    parser.add_argument("--inline-only", action="store_true", help="time the inline sweep alone")
    args = parser.parse_args()
    if args.inline_only:
        inline_only(args)
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cache = tmp / "features"
        embed_sharded(EmbedJob(DATASET, num_shards=2, cache_dir=str(cache), device="cpu"), executor_spec("inline"))
        set_threads(args.inline_threads or cores())
        n = len(grid(tmp / "count", cache, args))
        inline, first, over_inline = timed_sweep(tmp, cache, "inline", args, "inline", None)
        local2, second, over_local2 = timed_sweep(tmp, cache, "local2", args, "local", 2)
        local1, _, over_local1 = timed_sweep(tmp, cache, "local1", args, "local", 1)
        trip = worker_round_trip(tmp)
    a, b = first["table"], second["table"]
    same = float((a.filter(like="_mean") - b.filter(like="_mean")).abs().max().max())
    figures = {"runs": n, "epochs": args.epochs, "cores": cores(), "load_avg_1min": os.getloadavg()[0], "inline_s": round(inline, 1),
               "local2_s": round(local2, 1), "local1_s": round(local1, 1), "speedup_local2": round(inline / local2, 2),
               "overhead_per_run_s": {"inline": round(over_inline, 2), "local2": round(over_local2, 2), "local1": round(over_local1, 2)}, "worker_round_trip_s": round(trip, 2),
               "max_mean_difference_inline_vs_local2": same}
    print(f"{'grid':<44} {n} runs ({args.methods} x shots {args.shots} x seeds {args.seeds}), {args.epochs} epochs, {DATASET}")
    for label, key in (("inline (this process)", "inline_s"), ("local, 2 workers", "local2_s"), ("local, 1 worker", "local1_s")):
        print(f"{label:<44} {figures[key]:>7.1f} s  ({figures[key] / n:.2f} s per run)")
    print(f"{'speed-up, local 2 workers vs inline':<44} {figures['speedup_local2']:>7.2f} x")
    over = figures["overhead_per_run_s"]
    print(f"{'overhead per run (wall x workers - run seconds)':<44} inline {over['inline']:.2f} s, local 2 {over['local2']:.2f} s, "
          f"local 1 {over['local1']:.2f} s")
    print(f"{'one worker start (a no-op local job)':<44} {figures['worker_round_trip_s']:>7.2f} s")
    print(f"{'results: max |mean inline - mean local 2|':<44} {same:.1e} (inline: {cores()} threads, local: {max(1, cores() // 2)} each)")
    print("JSON " + json.dumps(figures))


if __name__ == "__main__":
    main()
