# OrdinalCLIP Explorer: developer entry points.
#
#   make test   set up .venv (if needed), install Chromium (if needed), lint, run pytest
#   make test-fast  the same without slow and browser tests (the quick loop)
#   make run    set up .venv (if needed), start the Streamlit app (online: the hub is reachable)
#   make help   list all targets
#
# The virtualenv is (re)installed only when pyproject.toml changes or the
# venv is missing: see the $(STAMP) rule below.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# --- Configuration (override on the command line, e.g. `make run PORT=8600`) ---
PYTHON_BOOTSTRAP ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV     ?= .venv
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip
PORT     ?= 8501
CHROMIUM ?= /usr/bin/chromium
PYTEST_ARGS ?=

# Marker file: its timestamp records the last successful `pip install`.
# Make re-runs the install only when pyproject.toml is newer than it
# (or when it is missing, e.g. after `make clean` / on a fresh machine).
STAMP := $(VENV)/.installed

# The app runs online (the Models page downloads real CLIPs); HF_HUB_OFFLINE is honoured when
# the user sets it, never forced. Caches stay inside the repo.
RUN_ENV := NUMBA_CACHE_DIR=$(CURDIR)/.cache/numba \
           MPLBACKEND=Agg \
           PYTHONUNBUFFERED=1
# The test suite is hermetic: offline, a loopback server stands in for the hub.
TEST_ENV := $(RUN_ENV) \
            HF_HUB_OFFLINE=1 \
            TRANSFORMERS_OFFLINE=1

# apt-get needs root: use sudo only when we are not root and sudo exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo 2>/dev/null)

.PHONY: help venv lint test test-fast run demo-backbone demo-checkpoints bench clean

help: ## Show this help
	@echo "OrdinalCLIP Explorer - make targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "} {printf "  %-15s %s\n", $$1, $$2}'
	@echo ""
	@echo "Variables: PORT=$(PORT) (make run), PYTEST_ARGS='...' (make test), VENV=$(VENV)"

# --- Virtualenv -----------------------------------------------------------------

# Create the venv itself (only if its python is missing).
$(PY):
	@test -n "$(PYTHON_BOOTSTRAP)" || { echo "error: python3.11 / python3 not found" >&2; exit 1; }
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)

# Install the project (editable) with test extras; re-runs only when
# pyproject.toml changed since the last successful install.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[test]'
	touch $@

venv: $(STAMP) ## Create .venv and install the project (+ test extras)

# --- System Chromium for the browser tests (never `playwright install`) -----------

$(CHROMIUM):
	@echo "Chromium not found at $(CHROMIUM): installing Debian's chromium package"
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium

# --- User-facing targets ----------------------------------------------------------

lint: $(STAMP) ## ruff, and the import layers contract (lint-imports, see pyproject.toml)
	$(PY) -m ruff check --no-cache .
	$(VENV)/bin/lint-imports --no-cache

# The whole suite runs on every core (pytest-xdist); a test file stays on one worker (--dist loadfile:
# its module fixtures, e.g. a library or a Streamlit server, are made once). PYTEST_ARGS="-n 0" runs it serially.
test: lint $(CHROMIUM) ## Lint, then run the whole pytest suite (incl. browser tests) on every core
	@mkdir -p .cache/numba
	$(TEST_ENV) $(PY) -m pytest -n auto --dist loadfile $(PYTEST_ARGS)

test-fast: lint ## Lint, then the fast tier: no slow tests, no browser tests, on every core
	@mkdir -p .cache/numba
	$(TEST_ENV) $(PY) -m pytest -n auto -m "not slow and not browser" $(PYTEST_ARGS)

run: $(STAMP) ## Start the Streamlit app on PORT (default 8501)
	@mkdir -p .cache/numba
	$(RUN_ENV) $(PY) -m streamlit run app.py \
	  --server.port $(PORT) \
	  --server.headless true \
	  --browser.gatherUsageStats false

demo-backbone: $(STAMP) ## Build the small demo backbone checkpoint
	$(RUN_ENV) $(PY) scripts/make_demo_backbone.py

demo-checkpoints: $(STAMP) ## Train the bundled demo checkpoints on the dots task
	$(RUN_ENV) $(PY) scripts/make_demo_checkpoints.py

bench: $(STAMP) ## Run every benchmarks/*.py script (if any)
	@shopt -s nullglob; scripts=(benchmarks/*.py); \
	if [ $${#scripts[@]} -eq 0 ]; then echo "No benchmarks/*.py scripts found."; exit 0; fi; \
	for s in "$${scripts[@]}"; do \
	  echo "==> $$s"; \
	  $(RUN_ENV) $(PY) "$$s"; \
	done

clean: ## Remove .venv, caches and test artifacts
	rm -rf $(VENV) .cache .pytest_cache test-artifacts build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
