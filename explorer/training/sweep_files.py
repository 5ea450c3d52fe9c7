"""The files of a sweep folder, and what they say about each run (torch-free).

``sweep.json`` is the plan: every run of the grid with its config (written when the sweep starts, so
``--status`` and the app can read a sweep that runs elsewhere, e.g. under Slurm). Each run has its own
folder ``runs/<id>/``: the trainer's checkpoint and history, then

- ``running.json``: host, process, job and how far it is; rewritten every few seconds while it runs;
- ``result.json``: its metrics row, the fingerprint of its settings and the digest of its checkpoint,
  written last: a run is **done** exactly when this file is there, matches the plan and names the
  checkpoint that is there (a run killed at any moment is never taken for done);
- ``failed.json``: the one sentence of a run that raised.

Every file is written atomically (:mod:`explorer.core.fsio`); the results tables are made from these
files alone, so they are the same whichever executor ran the runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from explorer.core.errors import ExplorerError, one_line
from explorer.core.fsio import file_digest, write_text
from explorer.training.config import SweepRun, TrainConfig, run_checkpoint

PLAN = "sweep.json"
RESULT, FAILED, RUNNING = "result.json", "failed.json", "running.json"
STATES = ("done", "running", "failed", "waiting")
HEARTBEAT_STALE_S = 600.0  # a run on another host whose running.json is older than this is taken for stopped
VOLATILE = ("out", "cache_dir", "device", "name")  # settings that do not change a run's result


def fingerprint(config: TrainConfig) -> str:
    """16 hex digits naming what a run computes (its settings less where files go and the device)."""
    data = {k: v for k, v in config.to_dict().items() if k not in VOLATILE}
    return hashlib.blake2b(json.dumps(data, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


def run_folder(folder: str | Path, run: SweepRun) -> Path:
    """The run's own folder in the sweep folder."""
    return run_checkpoint(folder, run.id).parent


def write_plan(folder: str | Path, runs: list[SweepRun]) -> Path:
    """Write ``sweep.json`` (the runs and their configs; paths relative to the folder, so it can move)."""
    records = [{"id": r.id, "label": r.label, "shots": r.shots, "seed": r.seed, "fingerprint": fingerprint(r.config),
                "config": {k: v for k, v in r.config.to_dict().items() if k != "out"}} for r in runs]
    return write_text(Path(folder) / PLAN, json.dumps({"version": 1, "runs": records}, indent=1) + "\n")


def read_plan(folder: str | Path) -> list[SweepRun]:
    """The runs of the sweep in ``folder`` (from its ``sweep.json``), their files in this folder."""
    path = Path(folder) / PLAN
    if not path.is_file():
        raise ExplorerError(f"{folder} is not a sweep folder (it has no {PLAN}); start the sweep with 'ordinal-explorer sweep'.")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["runs"]
        runs = [SweepRun(r["label"], r["shots"], int(r["seed"]), TrainConfig.from_dict({**r["config"], "out": ""}))
                for r in records]
    except (ValueError, KeyError, TypeError) as exc:
        raise ExplorerError(f"{path} is not a readable sweep plan ({one_line(exc, 100)}).") from exc
    return [replace(r, config=replace(r.config, out=str(run_checkpoint(folder, r.id)))) for r in runs]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_run_file(folder: str | Path, run: SweepRun, name: str, data: dict[str, Any]) -> Path:
    """Write one of a run's state files (atomically), stamped with the run's fingerprint."""
    return write_text(run_folder(folder, run) / name, json.dumps({**data, "fingerprint": fingerprint(run.config)}) + "\n")


def clear_run_file(folder: str | Path, run: SweepRun, name: str) -> None:
    """Remove one of a run's state files (when it is there)."""
    (run_folder(folder, run) / name).unlink(missing_ok=True)


def record_result(folder: str | Path, run: SweepRun, row: dict[str, Any]) -> Path:
    """The run is done: its row and its checkpoint's digest (the run's last write)."""
    ckpt = Path(run.config.out)
    return write_run_file(folder, run, RESULT, {"row": row, "checkpoint": ckpt.name, "digest": file_digest(ckpt),
                                                "finished": time.time(), "host": socket.gethostname()})


@dataclass
class RunStatus:
    """What a run's files say: its state (done, running, failed, waiting), a detail, its row or error."""

    run: SweepRun
    state: str
    detail: str = ""
    row: dict[str, Any] | None = None
    error: str | None = None


def _done_row(folder: Path, run: SweepRun) -> dict[str, Any] | None:
    data = _read_json(run_folder(folder, run) / RESULT)
    if not data or data.get("fingerprint") != fingerprint(run.config) or not isinstance(data.get("row"), dict):
        return None
    ckpt = Path(run.config.out)
    if data.get("checkpoint") != ckpt.name or not ckpt.is_file() or file_digest(ckpt) != data.get("digest"):
        return None
    return data["row"]


def _alive(marker: dict[str, Any], now: float) -> bool:
    """Is the process named in a running.json still there? This host: ask the system (POSIX); another
    host, or Windows: the file was refreshed within HEARTBEAT_STALE_S."""
    if marker.get("host") == socket.gethostname() and os.name == "posix":
        try:
            os.kill(int(marker.get("pid", -1)), 0)
        except (ProcessLookupError, ValueError, OverflowError):
            return False
        except PermissionError:
            return True
        return True
    return now - float(marker.get("updated", 0)) < HEARTBEAT_STALE_S


def run_status(folder: str | Path, run: SweepRun, now: float | None = None) -> RunStatus:
    """The state of one run from its files alone."""
    folder, now = Path(folder), time.time() if now is None else now
    row = _done_row(folder, run)
    if row is not None:
        return RunStatus(run, "done", row=row)
    marker = _read_json(run_folder(folder, run) / RUNNING)
    if marker and marker.get("fingerprint") == fingerprint(run.config):
        where = f"process {marker.get('pid')} on {marker.get('host')}" + (f", job {marker['job']}" if marker.get("job") else "")
        if _alive(marker, now):
            return RunStatus(run, "running", f"{marker.get('stage') or 'starting'} ({where})")
        return RunStatus(run, "waiting", f"interrupted ({where} stopped)")
    failed = _read_json(run_folder(folder, run) / FAILED)
    if failed and failed.get("fingerprint") == fingerprint(run.config):
        return RunStatus(run, "failed", error=str(failed.get("error") or "the run failed"))
    return RunStatus(run, "waiting")


def sweep_status(folder: str | Path, runs: list[SweepRun] | None = None) -> list[RunStatus]:
    """Every run's state (the runs of ``sweep.json`` unless given)."""
    runs = read_plan(folder) if runs is None else runs
    now = time.time()
    return [run_status(folder, r, now) for r in runs]


def count_states(statuses: list[RunStatus]) -> dict[str, int]:
    """How many runs are done, running, failed and waiting."""
    return {s: sum(st.state == s for st in statuses) for s in STATES}


def status_lines(statuses: list[RunStatus]) -> list[str]:
    """One line per run (id, state, detail or error) and a last line with the counts."""
    width = max((len(s.run.id) for s in statuses), default=0)
    lines = [f"{s.run.id:<{width}}  {s.state:<7}  {s.error or s.detail}".rstrip() for s in statuses]
    counts = count_states(statuses)
    return lines + [", ".join(f"{n} {state}" for state, n in counts.items())]


def table_rows(statuses: list[RunStatus]) -> list[dict[str, Any]]:
    """The rows the results tables are made of: done runs' metrics, failed runs' errors (in plan order)."""
    rows = []
    for s in statuses:
        key = {"method": s.run.label, "shots": s.run.shots or "all", "seed": s.run.seed, "label_shift": s.run.label_shift}
        if s.state == "done":
            rows.append({**key, **s.row, "status": "done", "error": ""})
        elif s.state == "failed":
            rows.append({**key, "status": "failed", "error": s.error})
    return rows
