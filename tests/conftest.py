"""Shared pytest fixtures.

Browser (end-to-end) harness
----------------------------
* ``streamlit_server`` (session): starts a real ``streamlit run app.py``
  subprocess on a free port and yields its base URL, e.g.
  ``"http://127.0.0.1:54321"``.  The server log goes to
  ``test-artifacts/streamlit-server.log``.  The server sees
  ``ORDINAL_EXPLORER_CHECKPOINTS`` = ``app_library_dir`` and
  ``ORDINAL_EXPLORER_CACHE`` = a session temporary folder.
* ``app_library_dir`` (session): a temporary checkpoint library made on the
  demo backbone by ``tests/app_testdata.py`` (good checkpoints + bad files).
* ``browser_type_launch_args`` (session): overrides pytest-playwright's fixture
  so the ``page`` / ``browser`` fixtures use Debian's ``/usr/bin/chromium``
  (``playwright install`` is never used).
* ``open_app`` (function): ``open_app(path="/") -> Page`` navigates the
  pytest-playwright ``page`` to the app and waits until Streamlit has finished
  running the script.
* ``screenshot`` (function): ``screenshot(page, name=None) -> Path`` saves a
  full-page PNG to ``test-artifacts/screenshots/<test name>[-<name>].png``.

Mark browser tests with ``@pytest.mark.browser``.

AppTest harness
---------------
* ``env`` (module): a checkpoint library made on the demo backbone and a cache folder, set as
  ``ORDINAL_EXPLORER_CHECKPOINTS`` / ``ORDINAL_EXPLORER_CACHE`` (and the CPU as the device) while the
  module's tests run; ``{"folder": Path, "cache": Path}``. Opening pages: ``tests/app_helpers.py``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network (make test sets it too)
# Numbers are checked against fp32 computations: --precision auto means fp32 in the suite on every CPU
# (on one with native bf16 it would be bf16); the bf16 paths are tested by name (test_precision.py).
os.environ.setdefault("ORDINAL_EXPLORER_PRECISION", "fp32")
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"
SCREENSHOTS_DIR = ARTIFACTS_DIR / "screenshots"
SERVER_LOG = ARTIFACTS_DIR / "streamlit-server.log"

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

SERVER_START_TIMEOUT_S = 60.0
APP_RENDER_TIMEOUT_MS = 60_000


# --------------------------------------------------------------------------- #
# Streamlit server
# --------------------------------------------------------------------------- #


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(max_chars: int = 4000) -> str:
    try:
        text = SERVER_LOG.read_text(errors="replace")
    except OSError:
        return "<no server log>"
    return text[-max_chars:] or "<empty server log>"


def _health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200 and resp.read().strip() == b"ok"
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def app_library_dir(tmp_path_factory) -> Path:
    """A checkpoint library for the app (see tests/app_testdata.py), made once per session."""
    from app_testdata import make_library

    folder = tmp_path_factory.mktemp("app-library")
    make_library(folder)
    return folder


@pytest.fixture(scope="session")
def streamlit_server(app_library_dir, tmp_path_factory) -> str:
    """Run ``streamlit run app.py`` for the whole session; yield its base URL."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"

    env = os.environ.copy()
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        MPLBACKEND="Agg",
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("NUMBA_CACHE_DIR", str(REPO_ROOT / ".cache" / "numba"))
    env["ORDINAL_EXPLORER_CHECKPOINTS"] = str(app_library_dir)
    env["ORDINAL_EXPLORER_CACHE"] = str(tmp_path_factory.mktemp("app-cache"))
    env.setdefault("ORDINAL_EXPLORER_DEVICE", "cpu")

    cmd = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
    ]
    log = open(SERVER_LOG, "w", buffering=1)
    log.write(f"$ {' '.join(cmd)}\n")
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )

    def _stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()

    health_url = f"{base_url}/_stcore/health"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not _health_ok(health_url):
        if proc.poll() is not None:
            _stop()
            pytest.fail(
                f"streamlit server exited with code {proc.returncode} before becoming "
                f"healthy.\nLog ({SERVER_LOG}):\n{_log_tail()}",
                pytrace=False,
            )
        if time.monotonic() > deadline:
            _stop()
            pytest.fail(
                f"streamlit server did not answer 'ok' on {health_url} within "
                f"{SERVER_START_TIMEOUT_S:.0f} s.\nLog ({SERVER_LOG}):\n{_log_tail()}",
                pytrace=False,
            )
        time.sleep(0.25)

    try:
        yield base_url
    finally:
        _stop()


# --------------------------------------------------------------------------- #
# Playwright / Chromium
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Use the system Chromium (Debian package), headless, no sandbox."""
    if not os.path.exists(CHROMIUM_PATH):
        pytest.fail(
            f"{CHROMIUM_PATH} not found: browser tests need Debian's chromium. "
            "Run `make test` (it installs it), or "
            "`apt-get install -y --no-install-recommends chromium`.",
            pytrace=False,
        )
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM_PATH,
        "args": [*browser_type_launch_args.get("args", []), *CHROMIUM_ARGS],
        "headless": browser_type_launch_args.get("headless", True),
    }


def wait_for_streamlit(page, timeout_ms: int = APP_RENDER_TIMEOUT_MS) -> None:
    """Wait until the Streamlit app is mounted and its script run has finished."""
    page.wait_for_selector('[data-testid="stApp"]', state="visible", timeout=timeout_ms)
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]',
        state="attached", timeout=timeout_ms,
    )


@pytest.fixture
def open_app(page, streamlit_server):
    """``open_app(path="/")``: load the app in ``page`` and wait for it to render."""

    def _open(path: str = "/", timeout_ms: int = APP_RENDER_TIMEOUT_MS):
        page.goto(streamlit_server + path, wait_until="domcontentloaded", timeout=timeout_ms)
        wait_for_streamlit(page, timeout_ms)
        return page

    return _open


@pytest.fixture
def screenshot(request):
    """``screenshot(page, name=None) -> Path``: save a full-page PNG artifact."""

    def _save(page, name: str | None = None) -> Path:
        SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
        stem = request.node.name + (f"-{name}" if name else "")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_")
        path = SCREENSHOTS_DIR / f"{stem}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return _save


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The AppTest modules' library and cache folders, in the environment for the module (see above)."""
    from app_helpers import app_environment
    from app_testdata import make_library

    folder = tmp_path_factory.mktemp("app-library")
    make_library(folder)
    with app_environment(folder, tmp_path_factory.mktemp("app-cache")) as env:
        yield env


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module: the tiny models in the tests run many times faster that way
    than with two threads contending on a busy 2-core machine. Use with ``pytest.mark.usefixtures``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
