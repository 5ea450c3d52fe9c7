"""The README's two commands, read from the Makefile's own recipes (``make -n`` runs nothing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _recipe(target: str, env: dict | None = None) -> str:
    # STAMP/CHROMIUM prerequisites may be out of date on a dev machine: -B would rebuild them, so
    # ask for the recipe with every prerequisite taken as up to date (-o).
    cmd = ["make", "-n", "-o", ".venv/.installed", "-o", "/usr/bin/chromium", target]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, env=env).stdout


def test_make_run_does_not_force_offline_mode():
    recipe = _recipe("run")
    assert "streamlit run app.py" in recipe
    assert "HF_HUB_OFFLINE" not in recipe and "TRANSFORMERS_OFFLINE" not in recipe


def test_make_test_is_hermetic():
    recipe = _recipe("test")
    assert "pytest" in recipe and "HF_HUB_OFFLINE=1" in recipe


def test_make_test_fast_skips_slow_and_browser_tests():
    recipe = _recipe("test-fast")
    assert '-m "not slow and not browser"' in recipe and "HF_HUB_OFFLINE=1" in recipe
