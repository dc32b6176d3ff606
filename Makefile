# Two entry points do all set-up on a fresh machine:
#   make book   build the site (every chapter executed; SAEBOOK_PROFILE, default tiny)
#   make test   unit tests of saebook + every chapter executed under the tiny profile
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.saebook-installed
export SAEBOOK_PROFILE ?= tiny

.PHONY: setup book test lint clean rehearse

# Re-runs only when the pins change. CPU torch from the pinned wheel unless CUDA is present.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	else $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

book: setup
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "Site: _build/html/index.html"

test: setup
	$(PY) -m pytest

# every chapter on gpt2's real shapes, random weights, offline, 12 GB cap (issue 15)
rehearse: setup
	$(PY) scripts/rehearse.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks book/_ext .github/scripts

clean:
	rm -rf _build
