"""The installable example method (examples/median_method), installed for tests into a temporary folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "ordinalclip-median"


def install_example(target: Path) -> Path:
    """pip-install examples/median_method into ``target`` (no dependencies, no network), built from a copy so
    that parallel test workers never share a build folder; returns ``target`` (put it on sys.path / PYTHONPATH)."""
    source = target.parent / "median_method-src"
    shutil.copytree(ROOT / "examples" / "median_method", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(target), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=target.parent)
    if done.returncode != 0:
        raise RuntimeError(f"installing the example failed: {done.stderr}")
    return target
