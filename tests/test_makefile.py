"""The README's two commands, read from the Makefile's own recipes (``make -n`` runs nothing), and the
README's statements about them checked against the Makefile."""

from __future__ import annotations

import re
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


# --- what the README says about the targets --------------------------------------------------------

README = (ROOT / "README.md").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def _targets() -> set[str]:
    return set(re.search(r"^\.PHONY:(.*)$", MAKEFILE, re.MULTILINE).group(1).split())


def test_readme_says_what_make_run_and_make_test_do():
    assert "make run    # set up .venv and start the app" in README
    assert "make test   # set up .venv" in README and "run the whole suite" in README
    assert "`make test-fast`" in README and "without the slow and the browser" in README
    assert "pip install -e '.[test]'" in README and "$(PIP) install -e '.[test]'" in MAKEFILE


def test_readme_default_port_is_the_makefiles():
    port = re.search(r"^PORT\s*\?=\s*(\d+)", MAKEFILE, re.MULTILINE).group(1)
    assert f"http://localhost:{port}" in README


def test_every_make_target_the_docs_name_exists():
    docs = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    named = {m for doc in docs for m in re.findall(r"\bmake ([a-z][a-z-]*)", doc.read_text(encoding="utf-8"))}
    assert {"run", "test", "test-fast"} <= named
    assert named <= _targets(), f"not Makefile targets: {sorted(named - _targets())}"
    listed = set(re.search(r"`make help` lists every target \(([^)]*)\)", README).group(1).replace("`", "").replace(",", " ").split())
    assert listed == _targets() - {"help"}
