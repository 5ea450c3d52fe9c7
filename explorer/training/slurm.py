"""Slurm settings of ``--executor slurm``: the defaults file, the ``--slurm-*`` flags over it, and the
parameters submitit's ``SlurmExecutor`` writes into the job array's ``#SBATCH`` lines (torch-free).

The defaults file is TOML (:func:`explorer.core.settings.slurm_config_file` says where), e.g.::

    partition = "gpu"
    time = "12:00:00"        # minutes (720) or [D-]H:MM[:SS]
    cpus = 8                 # cpus per task: also the torch threads of each run
    gpus = 1                 # gpus per node (per array task)
    mem_gb = 32
    account = "mylab"
    qos = "normal"
    constraint = "a100"
    setup = ["module load cuda/12.1", "source ~/venvs/explorer/bin/activate"]

A flag given on the command line wins over the file; a key the file should not have is refused by name.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from explorer.core.errors import ExplorerError, one_line

DEFAULT_TIME_MIN = 240  # what a task may run when neither the file nor --slurm-time says (submitit's own default is 5)


@dataclass
class SlurmOptions:
    """What each array task asks Slurm for."""

    partition: str | None = None
    time: int = DEFAULT_TIME_MIN  # minutes
    cpus: int | None = None
    gpus: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run before each task (modules, environments)

    def parameters(self) -> dict[str, Any]:
        """submitit SlurmExecutor parameters (None left out: the cluster's own defaults apply)."""
        params = {"job_name": "ordinal-explorer", "partition": self.partition, "time": self.time, "cpus_per_task": self.cpus,
                  "gpus_per_node": self.gpus, "mem": f"{self.mem_gb:g}GB" if self.mem_gb else None, "account": self.account,
                  "qos": self.qos, "constraint": self.constraint, "setup": list(self.setup) or None}
        return {k: v for k, v in params.items() if v is not None}


def parse_time(value: Any, where: str) -> int:
    """Minutes from ``90``, ``"90"``, ``"1:30"`` / ``"1:30:00"`` (H:MM[:SS]) or ``"2-00:00:00"`` (D-H:MM:SS)."""
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?", text)
    if text.isdigit():
        minutes = int(text)
    elif m:
        days, hours, mins, secs = (int(g or 0) for g in m.groups())
        minutes = days * 1440 + hours * 60 + mins + (1 if secs else 0)
    else:
        raise ExplorerError(f"{where} must be minutes or [D-]H:MM[:SS] (got '{text}').")
    if minutes < 1:
        raise ExplorerError(f"{where} must be at least one minute (got '{text}').")
    return minutes


def _checked(options: SlurmOptions, where: str) -> SlurmOptions:
    for name in ("cpus", "gpus"):
        value = getattr(options, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "cpus" else 0)):
            raise ExplorerError(f"{where}: {name} must be a whole number {'>= 1' if name == 'cpus' else '>= 0'} (got {value!r}).")
    if not isinstance(options.setup, list) or not all(isinstance(line, str) for line in options.setup):
        raise ExplorerError(f"{where}: setup must be a list of shell lines.")
    return options


def read_defaults(path: str | Path | None = None) -> SlurmOptions:
    """The Slurm defaults file (none there: every setting at its default)."""
    from explorer.core.settings import slurm_config_file

    path = Path(path) if path else slurm_config_file()
    if not path.is_file():
        return SlurmOptions()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ExplorerError(f"The Slurm defaults file {path} is not readable TOML ({one_line(exc, 100)}).") from exc
    known = {f.name for f in fields(SlurmOptions)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ExplorerError(f"The Slurm defaults file {path} has unknown keys {', '.join(unknown)}; it takes {', '.join(sorted(known))}.")
    if "time" in data:
        data["time"] = parse_time(data["time"], f"time in {path}")
    return _checked(SlurmOptions(**data), str(path))


def slurm_options(flags: dict[str, Any], path: str | Path | None = None) -> SlurmOptions:
    """The defaults file with the flags given (not None) over it; ``flags``: partition, time, cpus, gpus."""
    given = {k: v for k, v in flags.items() if v is not None}
    if "time" in given:
        given["time"] = parse_time(given["time"], "--slurm-time")
    return _checked(replace(read_defaults(path), **given), "the --slurm-* flags")
