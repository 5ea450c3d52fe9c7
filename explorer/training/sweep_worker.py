"""What a sweep worker does, in this process (``--executor inline``) or in a worker process that submitit
started (a local process or a Slurm array task): train its runs one after another, each run's files
in its own folder (:mod:`explorer.training.sweep_files`).

A run is marked running (``running.json``, refreshed by a heartbeat thread), trained, then its metrics
row is written as ``result.json``, the run's last write; a run that raises leaves its one sentence in
``failed.json`` and the worker goes on with its next run. Runs already done are skipped, so a worker
started again does only what is left.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Callable

from explorer.core.errors import ExplorerError, one_line
from explorer.training import sweep_files as files
from explorer.training.config import Cancelled, Progress, SweepRun
from explorer.training.executors import set_threads

HEARTBEAT_S = 30.0  # running.json is rewritten at least this often while a run goes on
UPDATE_S = 2.0  # ... and at most this often when its progress changes


def job_id() -> str | None:
    """The Slurm or submitit job this process runs in, if any."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID")


class Heartbeat:
    """Keeps a run's ``running.json`` fresh from a thread: who runs it and how far it is."""

    def __init__(self, folder, run: SweepRun):
        self.folder, self.run = folder, run
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "job": job_id(), "started": time.time(), "stage": "starting"}
        self.changed = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"heartbeat-{run.id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._write()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        files.clear_run_file(self.folder, self.run, files.RUNNING)

    def update(self, p: Progress) -> None:
        """Record how far the run is (a training progress event)."""
        if p.stage in ("train", "epoch") and p.epochs:
            stage = f"epoch {p.epoch}/{p.epochs}"
        else:
            stage = {"embed": "embedding", "test": "testing", "load": "loading"}.get(p.stage, p.stage)
        if stage != self.info["stage"]:
            self.info["stage"] = stage
            self.changed.set()

    def _write(self) -> None:
        files.write_run_file(self.folder, self.run, files.RUNNING, {**self.info, "updated": time.time()})

    def _loop(self) -> None:
        last = time.monotonic()
        while not self.stop.wait(UPDATE_S):
            if self.changed.is_set() or time.monotonic() - last >= HEARTBEAT_S:
                self.changed.clear()
                self._write()
                last = time.monotonic()


def result_row(run: SweepRun, result) -> dict[str, Any]:
    """A finished run's row of runs.csv: its grid cell, test metrics, ordinality and seconds."""
    from explorer.analysis.geometry import ordinality_report
    from explorer.store.checkpoints import load_checkpoint

    protos = load_checkpoint(result.checkpoint).prototypes.matrix.numpy()
    test = {k: v for k, v in (result.test_metrics or {}).items() if k != "per_rank_mae"}
    return {"method": run.label, "shots": run.shots or "all", "seed": run.seed, "label_shift": run.label_shift,
            **test, "ordinality": ordinality_report(protos)["ordinality"], "seconds": result.seconds}


def run_one(folder, run: SweepRun, backbone=None, progress: Callable[[Progress], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> str:
    """Train one run and record it; returns its state ("done" or "failed"). A cancel (``should_stop``)
    raises :class:`Cancelled` and leaves the run waiting."""
    from explorer.training.trainer import train

    for name in (files.RESULT, files.FAILED):
        files.clear_run_file(folder, run, name)
    with Heartbeat(folder, run) as beat:
        def on_progress(p: Progress) -> None:
            beat.update(p)
            if progress:
                progress(p)
        try:
            result = train(run.config, progress=on_progress, should_stop=should_stop, backbone=backbone)
            if result.cancelled:
                raise Cancelled("The sweep was cancelled; its finished runs are kept.")
            row = result_row(run, result)
        except Cancelled:
            raise
        except ExplorerError as exc:
            return _failed(folder, run, one_line(exc, 300))
        except Exception as exc:  # a bug or the machine: still one sentence in the run's folder and table
            return _failed(folder, run, f"unexpected {type(exc).__name__}: {one_line(exc, 240)}")
        files.record_result(folder, run, row)
    return "done"


def _failed(folder, run: SweepRun, sentence: str) -> str:
    files.write_run_file(folder, run, files.FAILED, {"error": sentence, "host": socket.gethostname(), "when": time.time()})
    return "failed"


def shared_backbone(run: SweepRun, loaded: dict, progress: Callable[[Progress], None] | None = None):
    """A backbone this worker already loaded for the run's spec (frozen runs only; fine-tuning changes it)."""
    config = run.config
    if config.mode != "frozen":
        return None
    key = (config.backbone, config.device)
    if key not in loaded:
        from explorer.backbones.load import load_backbone
        from explorer.training.config import download_progress

        bar = download_progress(progress, config.backbone) if progress else None
        loaded[key] = load_backbone(config.backbone, device=config.device, progress=bar)
    return loaded[key]


def run_worker(folder: str, ids: list[str], threads: int | None = None, progress: Callable[[Progress], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> dict[str, int]:
    """One worker: the runs ``ids`` of the sweep in ``folder``, in order, done ones skipped; returns
    how many were done / failed by it. This is the function submitit runs in each worker process."""
    set_threads(threads)
    plan = {r.id: r for r in files.read_plan(folder)}
    loaded: dict = {}
    counts = {"done": 0, "failed": 0}
    for run_id in ids:
        run = plan[run_id]
        if files.run_status(folder, run).state == "done":
            continue
        if progress:
            progress(Progress("load", message=f"== {run.id}"))
        try:
            backbone = shared_backbone(run, loaded, progress)
        except ExplorerError as exc:
            counts[_failed(folder, run, one_line(exc, 300))] += 1
            continue
        counts[run_one(folder, run, backbone, progress, should_stop)] += 1
    return counts
