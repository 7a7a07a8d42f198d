# Podium — the two commands a newcomer types: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help install demo test test-fast browser-deps run migrate clean bench

help:
	@echo "make demo   - set up and run Podium (embedded mode) with demo traffic on http://$(HOST):$(PORT)"
	@echo "make test   - set up and run the whole test suite"
	@echo "make run    - run the server without demo traffic"
	@echo "make bench  - run the benchmarks under bench/"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Browser tests drive Debian's Chromium (Playwright's own download does not work offline).
browser-deps:
	@command -v chromium >/dev/null || { echo "installing chromium (apt)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q chromium >/dev/null; else sudo apt-get install -y -q chromium >/dev/null; fi; }

migrate: install
	$(PY) manage.py migrate --noinput -v0

demo: migrate
	$(PY) manage.py podium_seed_demo
	HOST=$(HOST) PORT=$(PORT) PY=$(PY) bash scripts/demo.sh

run: migrate
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) config.asgi:application

test: install browser-deps
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not browser and not production"

bench: install
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) var .test-*.sqlite3* *.egg-info
