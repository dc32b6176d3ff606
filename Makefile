# Two entry points do all set-up on a fresh machine:
#   make book   build the site (every chapter executed; SAEBOOK_PROFILE, default tiny)
#   make test   unit tests of saebook, then every chapter executed by nbmake (tiny profile),
#               then the site assembled from them and checked in headless Chromium
#   make notebooks   generate book/**/<chapter>.ipynb (jupytext) for `pytest --nbmake <file>`
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.saebook-installed
export SAEBOOK_PROFILE ?= tiny

.PHONY: setup book test test-unit notebooks lint clean rehearse

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

# TQDM_DISABLE: third-party progress bars stay out of the pages (saebook_site drops the rest)
book: setup
	TQDM_DISABLE=1 $(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "Site: _build/html/index.html"

# Three pytest sessions, the first two spread over the cores by pytest-xdist (TEST_WORKERS,
# one worker per CPU): the unit tests (-m "not book", one test file per worker, the slowest
# files first: tests/chapter_runner.py's SLOW_FIRST; they record the appendix's reference
# rows); every chapter executed by nbmake (-m chapter, one torch thread per kernel so that
# chapters side by side do not oversubscribe the cores); then the tests that read the executed
# chapters (site, browser, determinism reruns with the same thread count), one test file per
# worker: the site is assembled once (the first worker that needs it builds it, the others
# wait for it) while the other worker reruns chapters.
# Every session runs even when an earlier one failed; the target fails when any did.
TEST_WORKERS ?= auto
test: setup
	status=0; export SAEBOOK_PROFILE=tiny; \
	$(PY) -m pytest -m "not book" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	  --durations=10 || status=$$?; \
	SAEBOOK_THREADS=1 $(PY) -m pytest --nbmake book -m chapter -n $(TEST_WORKERS) || status=$$?; \
	SAEBOOK_THREADS=1 $(PY) -m pytest tests -m book -n $(TEST_WORKERS) --dist loadfile \
	  --durations=10 || status=$$?; \
	exit $$status

# The fast loop: the unit tests (-m "not book": no chapter, no test of executed chapters)
test-unit: setup
	$(PY) -m pytest -m "not book"

notebooks: setup
	$(PY) book/_ext/chapters.py notebooks

# every chapter on gpt2's real shapes, random weights, offline, 12 GB cap (issue 15)
rehearse: setup
	$(PY) scripts/rehearse.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks book/_ext .github/scripts

clean:
	rm -rf _build
	find book -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' -delete
