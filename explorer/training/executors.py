"""Where a sweep's runs (or an embedding's shards) execute: ``inline`` (this process, one after another),
``local`` (N worker processes on this machine) or ``slurm`` (one Slurm job array). Local processes and
Slurm arrays come from **submitit**, one API for both; nothing here schedules by itself.

Each worker gets its share of the machine: torch threads = cores // workers for local workers (and a
GPU each, round robin, when there are GPUs), ``--slurm-cpus`` for a Slurm task. The workers write
their results as files; submitit's own folder (``.submitit/`` in the sweep folder) holds its logs and
the pickled call of each job, written by this process and read only by its workers.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from explorer.core.errors import ExplorerError
from explorer.training.config import Cancelled
from explorer.training.slurm import SlurmOptions

EXECUTORS = ("inline", "local", "slurm")
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local executor kills a job after its timeout (default 2 min)
POLL_S = 0.5


@dataclass
class ExecutorSpec:
    """How to execute: the executor (inline, local, slurm), the number of workers (None: local = every core, slurm = all tasks at
    once) and, for Slurm, what each task asks for."""

    executor: str = "inline"
    workers: int | None = None
    slurm: SlurmOptions = field(default_factory=SlurmOptions)


def cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def executor_spec(executor: str, workers: int | None = None, slurm_flags: dict[str, Any] | None = None) -> ExecutorSpec:
    """A checked ExecutorSpec: one sentence for an unknown executor, ``--workers`` below 1, Slurm flags
    without ``slurm``, or an executor this machine cannot run."""
    from explorer.training.slurm import slurm_options

    given = {k: v for k, v in (slurm_flags or {}).items() if v is not None}
    if executor not in EXECUTORS:
        raise ExplorerError(f"Unknown executor '{executor}'; choose inline, local or slurm.")
    if workers is not None and workers < 1:
        raise ExplorerError(f"--workers must be at least 1 (got {workers}).")
    if given and executor != "slurm":
        raise ExplorerError(f"{', '.join('--slurm-' + k for k in given)} only apply with --executor slurm.")
    if executor == "inline" and workers not in (None, 1):
        raise ExplorerError("The inline executor runs one run at a time; use --executor local for several workers.")
    if executor == "local" and os.name != "posix":
        raise ExplorerError("The local executor needs POSIX process signals (Linux, macOS); on Windows use --executor inline.")
    if executor == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise ExplorerError("--executor slurm needs Slurm's sbatch and srun on PATH; run it on a login node of the cluster.")
    return ExecutorSpec(executor, workers, slurm_options(given) if executor == "slurm" else SlurmOptions())


def set_threads(threads: int | None) -> None:
    """Give this worker its share of the cores (torch's intra-op threads): ``threads``, else a Slurm
    task's ``SLURM_CPUS_PER_TASK``, else torch's default."""
    threads = threads or int(os.environ.get("SLURM_CPUS_PER_TASK") or 0)
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))


def local_workers(spec: ExecutorSpec, tasks: int) -> int:
    """How many local worker processes for ``tasks`` tasks (never more than there are)."""
    return max(1, min(spec.workers or cores(), tasks))


def split_round_robin(items: list, groups: int) -> list[list]:
    """``items`` dealt into ``groups`` lists in turn (neighbours in the grid go to different workers)."""
    return [items[k::groups] for k in range(groups) if items[k::groups]]


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def submit(spec: ExecutorSpec, folder: Path, fn: Callable, head: Any, items: list) -> list:
    """Submit ``fn(head, part, threads)`` over ``items`` on a local or Slurm executor: locally, the items
    shared round-robin over the workers, each with its share of the cores; on Slurm, one array task per
    item with the task's CPUs."""
    if spec.executor == "local":
        n = local_workers(spec, len(items))
        return submit_local(folder, fn, [(head, group, max(1, cores() // n)) for group in split_round_robin(items, n)])
    return submit_slurm(folder, fn, [(head, [item], spec.slurm.cpus) for item in items], spec)


def submit_local(folder: Path, fn: Callable, calls: list[tuple]) -> list:
    """One local worker process per call (``fn(*call)``), each with a GPU of its own when there are GPUs."""
    import submitit

    executor = submitit.LocalExecutor(folder=str(folder))
    gpus, jobs = _gpu_count(), []
    for k, call in enumerate(calls):
        gpu = {"gpus_per_node": 1, "visible_gpus": (k % gpus,)} if gpus else {}
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, **gpu)
        jobs.append(executor.submit(fn, *call))
    return jobs


def submit_slurm(folder: Path, fn: Callable, calls: list[tuple], spec: ExecutorSpec) -> list:
    """One Slurm job array, a task per call, at most ``spec.workers`` running at once."""
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=str(folder))
        executor.update_parameters(**spec.slurm.parameters(), array_parallelism=spec.workers or len(calls))
        return executor.map_array(fn, *zip(*calls))
    except (RuntimeError, OSError, ValueError) as exc:  # submitit's submission errors are RuntimeErrors
        raise ExplorerError(f"Slurm refused the job array ({' '.join(str(exc).split())[:200]}).") from exc


def cancel(jobs: list) -> None:
    """Cancel submitted jobs (local: stop the processes; Slurm: scancel), never raising."""
    for job in jobs:
        try:
            job.cancel(check=False)
        except Exception:  # a job that ended meanwhile, scancel missing: nothing to cancel
            pass


def wait(jobs: list, tick: Callable[[], bool], should_stop: Callable[[], bool] | None = None, poll_s: float = POLL_S) -> None:
    """Wait until ``tick()`` (called in between) says every task's files are written, or every job has
    ended (one that died leaves its tasks unfinished); a stop request or Ctrl-C cancels them."""
    try:
        while True:
            if tick() or all(job.done() for job in jobs):
                return
            if should_stop and should_stop():
                cancel(jobs)
                raise Cancelled("The sweep was cancelled; its finished runs are kept.")
            time.sleep(poll_s)
    except KeyboardInterrupt:
        cancel(jobs)
        raise
