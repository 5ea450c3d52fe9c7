"""Sweeps started from the app: each in a background thread that submits its runs (local worker
processes) and waits for them, findable again by its folder. What the page shows comes from the
sweep folder's files (:mod:`explorer.training.sweep_files`), so a sweep started elsewhere (the CLI,
Slurm) shows the same way; the thread only adds that it can be cancelled from here.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from explorer.core.errors import ExplorerError, one_line
from explorer.training.config import Cancelled, SweepRun
from explorer.training.executors import ExecutorSpec


@dataclass
class SweepJob:
    """A sweep running in a background thread of this server."""

    folder: Path
    runs: list[SweepRun]
    spec: ExecutorSpec
    state: str = "running"  # running, finished, failed, cancelled
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.state == "running"

    def cancel(self) -> None:
        """Stop the sweep's workers (finished runs are kept; the same sweep started again goes on)."""
        self._stop.set()

    def _run(self) -> None:
        from explorer.training.sweeps import sweep

        try:
            sweep(self.runs, self.folder, executor=self.spec, should_stop=self._stop.is_set)
            self.state = "finished"
        except Cancelled:
            self.state = "cancelled"
        except ExplorerError as exc:
            self.state, self.error = "failed", str(exc)
        except Exception as exc:  # unexpected: one line for the page, the traceback for the server log
            traceback.print_exc()
            self.state, self.error = "failed", f"unexpected {type(exc).__name__}: {one_line(exc)}"


class SweepManager:
    """The app's sweeps by folder (thread-safe); one running sweep per folder."""

    def __init__(self):
        self._jobs: dict[Path, SweepJob] = {}
        self._lock = threading.Lock()

    def start(self, runs: list[SweepRun], folder: str | Path, spec: ExecutorSpec) -> SweepJob:
        """Check the runs' settings, then start the sweep in a thread; refuses a folder whose sweep runs here."""
        if not runs:
            raise ExplorerError("The grid is empty; give at least one learner, one shots value and one seed.")
        runs[0].config.validate()
        folder = Path(folder).resolve()
        with self._lock:
            if folder in self._jobs and self._jobs[folder].active:
                raise ExplorerError(f"A sweep is already running in {folder}; wait for it or cancel it.")
            job = self._jobs[folder] = SweepJob(folder, runs, spec)
        threading.Thread(target=job._run, name=f"sweep-{folder.name}", daemon=True).start()
        return job

    def get(self, folder: str | Path) -> SweepJob | None:
        """The sweep this server started in ``folder`` (None: none, or it was started elsewhere)."""
        with self._lock:
            return self._jobs.get(Path(folder).resolve())
