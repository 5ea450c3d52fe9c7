"""Background training jobs: one thread per run, with progress, history, cancel and reconnect by id.

The app keeps one ``JobManager`` per server; each run gets its own id and output file (the id is added
to the name of ``config.out``: :func:`job_output`), so two runs started at once, even with the same
name, never share a file. A page that reloads finds its job again by id. A finished job
stays findable for ``keep_finished_s`` (10 minutes by default: long enough for its page to show the
result), then it is dropped.

With ``borrow`` (the app passes its backbone pool's :meth:`~explorer.backbones.pool.BackboneRegistry.borrow`)
a run on a local backbone (the demo, a weight file) uses the pool's backbone, kept loaded for the run,
instead of loading a copy of its own (a hub or zoo backbone is loaded by the run, which shows its
download's progress and can cancel it). The run
shares the frozen modules without holding the backbone's lock (it would keep every page on that
backbone waiting for the whole run): PyTorch runs forward and backward passes of unchanging modules
from several threads at once, and a run changes nothing in them. A fine-tuning run changes the
image tower, so it always loads its own copy.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ContextManager

from explorer.backbones.spec import parse_backbone_spec
from explorer.core.errors import ExplorerError
from explorer.training.config import RateEstimate
from explorer.training.trainer import Cancelled, Progress, TrainConfig, TrainResult, train


@dataclass
class TrainingJob:
    """A training run in a background thread; read its fields from any thread."""

    id: str
    config: TrainConfig
    state: str = "queued"
    stage: str = ""
    message: str = ""
    fraction: float = 0.0
    epoch: int = 0
    epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    steps: list[dict[str, Any]] = field(default_factory=list)  # recent step losses
    result: TrainResult | None = None
    error: str | None = None
    clock: Callable[[], float] = field(default=time.time, repr=False)
    borrow: Callable[..., ContextManager[Any]] | None = field(default=None, repr=False)
    started: float = field(default=0.0)
    finished: float | None = None
    embed: dict[str, Any] = field(default_factory=dict)  # done, total, eta_s of the embedding under way
    download: dict[str, Any] = field(default_factory=dict)  # done, total bytes of the backbone file downloading
    _eta: RateEstimate = field(default_factory=RateEstimate, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.started = self.started or self.clock()

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def checkpoint(self) -> Path | None:
        return self.result.checkpoint if self.result else None

    def cancel(self) -> None:
        """Ask the run to stop after its current step (the best checkpoint so far is kept)."""
        self._stop.set()

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the fields a page shows."""
        with self._lock:
            return {
                "id": self.id, "state": self.state, "stage": self.stage, "message": self.message,
                "fraction": self.fraction, "epoch": self.epoch, "epochs": self.epochs,
                "history": list(self.history), "steps": list(self.steps), "error": self.error,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "test": dict(self.result.test_metrics or {}) if self.result else None,
                "elapsed": (self.finished or self.clock()) - self.started,
                "embed": dict(self.embed), "download": dict(self.download), "backbone": self.config.backbone,
            }

    def _on_progress(self, p: Progress) -> None:
        with self._lock:
            self.stage = p.stage
            self.message = p.message or self.message
            if p.stage in ("train", "epoch"):
                self.epoch, self.epochs = p.epoch, p.epochs
            if p.stage == "download":
                self.download = {"done": p.done, "total": p.total or None}
            elif p.stage == "embed" and p.total:
                self.fraction = 0.1 * p.fraction
                eta = self._eta.update(p.done, p.total, self.clock())
                self.embed = {"done": p.done, "total": p.total, "eta_s": eta}
            elif p.stage == "train" and p.epochs:
                self.fraction = 0.1 + 0.85 * ((p.epoch - 1) + p.fraction) / p.epochs
                self.steps.append({"step": len(self.steps) + 1, "epoch": p.epoch, "loss": p.metrics.get("loss")})
                del self.steps[:-2000]
            elif p.stage == "epoch":
                self.history.append({"epoch": p.epoch, **p.metrics})
            elif p.stage == "done":
                self.fraction = 1.0

    def _run(self) -> None:
        with self._lock:
            self.state = "running"
        try:
            result = self._train()
            with self._lock:
                self.result = result
                self.state = "cancelled" if result.cancelled else "done"
                self.fraction = 1.0 if not result.cancelled else self.fraction
        except Cancelled as exc:
            with self._lock:
                self.state, self.error = "cancelled", str(exc)
        except ExplorerError as exc:
            with self._lock:
                self.state, self.error = "failed", str(exc)
        except Exception as exc:  # unexpected: one line for the page, the traceback for the server log
            traceback.print_exc()
            with self._lock:
                self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self.finished = self.clock()

    def _train(self) -> TrainResult:
        """The run, on the pool's backbone when it can borrow one: not for fine-tuning (that changes it), and
        only for local specs (a hub or zoo backbone loads in the run, which shows its download and can cancel it)."""
        if self.borrow is None or self.config.mode == "finetune" or not _local_spec(self.config.backbone):
            return train(self.config, progress=self._on_progress, should_stop=self._stop.is_set)
        self._on_progress(Progress("load", message=f"loading backbone {self.config.backbone}"))
        with self.borrow(self.config.backbone, self.config.device) as handle:
            return train(self.config, progress=self._on_progress, should_stop=self._stop.is_set, backbone=handle.backbone)


KEEP_FINISHED_S = 600.0


def job_output(out: str | Path, job_id: str) -> Path:
    """The checkpoint a job writes: ``out`` with the job id added to its name
    (``app-my-run.safetensors`` -> ``app-my-run-<id>.safetensors``); its temporaries, history and
    resume files are named after it, so they are the job's own too."""
    out = Path(out)
    return out.with_name(f"{out.stem}-{job_id}{out.suffix}")


def _local_spec(spec: str) -> bool:
    """True for the demo backbone and weight files (nothing to download)."""
    try:
        return parse_backbone_spec(spec).source in ("demo", "file")
    except ExplorerError:
        return False


class JobManager:
    """Starts jobs in daemon threads and finds them again by id (thread-safe); finished jobs are
    dropped ``keep_finished_s`` after they end (``clock``: time.time, or a test's)."""

    def __init__(self, max_running: int = 2, keep_finished_s: float = KEEP_FINISHED_S,
                 clock: Callable[[], float] = time.time, borrow: Callable[..., ContextManager[Any]] | None = None):
        self._jobs: dict[str, TrainingJob] = {}
        self._lock = threading.Lock()
        self.max_running = max_running
        self.keep_finished_s, self.clock, self.borrow = keep_finished_s, clock, borrow

    def _drop_expired(self) -> None:
        """Forget jobs finished more than ``keep_finished_s`` ago; call under the lock."""
        now = self.clock()
        for job_id in [i for i, j in self._jobs.items() if j.finished is not None and now - j.finished > self.keep_finished_s]:
            del self._jobs[job_id]

    def start(self, config: TrainConfig) -> TrainingJob:
        """Validate and start a run writing :func:`job_output` of ``config.out`` (``job.config.out``);
        refuses when too many are running already."""
        config.validate()
        with self._lock:
            self._drop_expired()
            running = sum(j.active for j in self._jobs.values())
            if running >= self.max_running:
                raise ExplorerError(f"{running} training runs are already going on this server; wait for one to finish.")
            job_id = uuid.uuid4().hex[:12]
            own = replace(config, out=str(job_output(config.out, job_id)))
            job = TrainingJob(job_id, own, clock=self.clock, borrow=self.borrow)
            self._jobs[job.id] = job
        threading.Thread(target=job._run, name=f"train-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str | None) -> TrainingJob | None:
        """The job with this id, or None."""
        with self._lock:
            self._drop_expired()
            return self._jobs.get(job_id or "")
