"""Stand-ins for Slurm's sbatch, srun, sacct and scancel that run the submitted job arrays on this
machine, so the Slurm executor is tested end to end without a cluster: submitit writes the same
batch script and calls the same commands as on a cluster, and the tasks run that script.

State lives in ``$FAKE_SLURM_STATE``: ``next_id`` (job ids), ``<job>.json`` (the submitted script's
``#SBATCH`` options, for the tests to read), ``<job>_<task>.state`` (PENDING, RUNNING, COMPLETED, FAILED,
CANCELLED) and ``<job>_<task>.pid``. ``sbatch`` starts a detached runner that runs the array's tasks,
at most ``%P`` at a time, each with the environment Slurm gives a task.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_STATE", "/tmp/fake-slurm"))


def _state(job: str, value: str | None = None) -> str:
    path = STATE / f"{job}.state"
    if value is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value)
        os.replace(tmp, path)
        return value
    return path.read_text().strip() if path.exists() else "UNKNOWN"


def _options(script: str) -> dict[str, str]:
    opts = {}
    for line in script.splitlines():
        m = re.match(r"#SBATCH --([\w-]+)(?:=(.*))?$", line.strip())
        if m:
            opts[m.group(1)] = (m.group(2) or "").strip("'\"")
    return opts


def sbatch(args: list[str]) -> int:
    script_path = Path(args[-1])
    script = script_path.read_text()
    opts = _options(script)
    STATE.mkdir(parents=True, exist_ok=True)
    counter = STATE / "next_id"
    job = int(counter.read_text()) if counter.exists() else 1000
    counter.write_text(str(job + 1))
    m = re.match(r"(\d+)-(\d+)(?:%(\d+))?$", opts.get("array", ""))
    tasks = list(range(int(m.group(1)), int(m.group(2)) + 1)) if m else [None]
    parallel = int(m.group(3)) if m and m.group(3) else len(tasks)
    (STATE / f"{job}.json").write_text(json.dumps({"options": opts, "script": script, "tasks": len(tasks)}))
    for t in tasks:
        _state(f"{job}_{t}" if t is not None else str(job), "PENDING")
    subprocess.Popen([sys.executable, __file__, "_run", str(job), str(script_path), str(parallel)] + [str(t) for t in tasks],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {job}")
    return 0


def _paths(pattern: str, env: dict[str, str]) -> str:
    return (pattern.replace("%A", env.get("SLURM_ARRAY_JOB_ID", env["SLURM_JOB_ID"]))
            .replace("%a", env.get("SLURM_ARRAY_TASK_ID", "0")).replace("%j", env["SLURM_JOB_ID"]).replace("%t", "0"))


def _start(job: int, task: str, script: str, opts: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, "SLURM_JOB_ID": str(job * 1000 + int(task if task != "None" else 0)), "SLURM_NTASKS": "1",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
           "SLURM_JOB_NODELIST": socket.gethostname(), "SLURM_CPUS_PER_TASK": opts.get("cpus-per-task", "1")}
    if task != "None":
        env.update(SLURM_ARRAY_JOB_ID=str(job), SLURM_ARRAY_TASK_ID=task)
    out = open(_paths(opts["output"], env), "a")
    err = open(_paths(opts.get("error", opts["output"]), env), "a")
    return subprocess.Popen(["bash", script], env=env, stdout=out, stderr=err, start_new_session=True)


def _run(args: list[str]) -> int:
    """The detached runner of one submitted job: its tasks, ``parallel`` at a time."""
    job, script, parallel, tasks = int(args[0]), args[1], int(args[2]), args[3:]
    opts = json.loads((STATE / f"{job}.json").read_text())["options"]
    running: dict[str, subprocess.Popen] = {}
    queue = list(tasks)
    while queue or running:
        for task, proc in list(running.items()):
            if proc.poll() is not None:
                name = f"{job}_{task}" if task != "None" else str(job)
                if _state(name) != "CANCELLED":
                    _state(name, "COMPLETED" if proc.returncode == 0 else "FAILED")
                del running[task]
        while queue and len(running) < parallel:
            task = queue.pop(0)
            name = f"{job}_{task}" if task != "None" else str(job)
            if _state(name) == "CANCELLED":
                continue
            running[task] = _start(job, task, script, opts)
            (STATE / f"{name}.pid").write_text(str(running[task].pid))
            _state(name, "RUNNING")
        time.sleep(0.1)
    return 0


def srun(args: list[str]) -> int:
    """Run the command of one task, its output and error streams where --output / --error say."""
    streams, i = {}, 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("--output", "--error"):
            streams[args[i]] = args[i + 1]
            i += 2
        else:
            i += 1
    env = dict(os.environ)
    for flag, fd in (("--output", 1), ("--error", 2)):
        if flag in streams:
            out = os.open(_paths(streams[flag], env), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(out, fd)
    os.execvp(args[i], args[i:])
    return 1


def sacct(args: list[str]) -> int:
    jobs = [args[k + 1] for k, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for job in jobs:
        for path in sorted(STATE.glob(f"{job}_*.state")) + sorted(STATE.glob(f"{job}.state")):
            print(f"{path.stem}|{path.read_text().strip()}|{socket.gethostname()}")
    return 0


def scancel(args: list[str]) -> int:
    for target in (a for a in args if not a.startswith("-")):
        names = [target] if "_" in target else [p.stem for p in STATE.glob(f"{target}_*.state")] or [target]
        for name in names:
            if _state(name) in ("PENDING", "RUNNING"):
                _state(name, "CANCELLED")
                pid = STATE / f"{name}.pid"
                if pid.exists():
                    try:
                        os.killpg(int(pid.read_text()), signal.SIGTERM)
                    except (ProcessLookupError, PermissionError):
                        pass
    return 0


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    sys.exit({"sbatch": sbatch, "srun": srun, "sacct": sacct, "scancel": scancel, "_run": _run}[command](rest))
