# Podium — the two commands a newcomer types: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help install demo test test-fast browser-deps run migrate clean bench bench-deps vendor run-uvicorn up serve docs

help:
	@echo "make demo   - set up and run Podium (embedded mode) with demo traffic on http://$(HOST):$(PORT)"
	@echo "make test   - set up and run the whole test suite"
	@echo "make run    - run the server without demo traffic"
	@echo "make up     - production-like stack on one port: a web process per core (gunicorn + uvicorn), 2 Celery workers, beat"
	@echo "              on PostgreSQL + Redis (DATABASE_URL, REDIS_URL)"
	@echo "make bench  - run the benchmarks under bench/"
	@echo "make docs   - build the documentation (docs/, MkDocs, strict) into site/"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Browser tests drive Debian's Chromium (Playwright's own download does not work offline).
# nginx: tests/test_deploy_config.py checks and starts the reference TLS proxy (deploy/nginx/); where it
# cannot be installed, that test skips saying so.
browser-deps:
	@command -v chromium >/dev/null || { echo "installing chromium (apt)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q chromium >/dev/null; else sudo apt-get install -y -q chromium >/dev/null; fi; }
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { echo "installing nginx (apt)"; \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null 2>&1; \
	  else sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null 2>&1; fi \
	  || echo "nginx could not be installed: tests/test_deploy_config.py will skip"; }

migrate: install
	$(PY) manage.py migrate --noinput -v0

demo: migrate
	$(PY) manage.py podium_seed_demo
	HOST=$(HOST) PORT=$(PORT) PY=$(PY) bash scripts/demo.sh

# The production web server (config/gunicorn.py: gunicorn + uvicorn worker), in the embedded mode one worker:
# daphne cost 1.4-1.8x its CPU per /v1 call in the same run (bench/RESULTS.md).
run: migrate
	$(VENV)/bin/gunicorn -c config/gunicorn.py -b $(HOST):$(PORT)

# The same application under uvicorn (uvloop + httptools): less CPU per /v1 call (bench/RESULTS.md).
# --no-proxy-headers: which X-Forwarded-For to believe is PODIUM_TRUSTED_PROXIES's decision, not uvicorn's.
run-uvicorn: migrate
	$(VENV)/bin/uvicorn config.asgi:application --host $(HOST) --port $(PORT) --no-access-log --lifespan on --no-proxy-headers

# Production-like, under supervisord (config/supervisord.conf) in the foreground: one port (PORT) served by
# WEB_PROCESSES gunicorn/uvicorn workers (default: one per core), WORKERS Celery workers (default 2) and beat,
# against DATABASE_URL (default: local PostgreSQL, database podium) and REDIS_URL (default: local Redis, db 0).
# A program that exits is restarted; each output line carries its program's name; Ctrl-C stops everything
# in order and exits 0.
up: install
	PY=$(PY) HOST=$(HOST) PORT=$(PORT) bash scripts/up.sh

# The production web server alone (config/gunicorn.py): HTTP and websockets on one port, WEB_PROCESSES
# workers (default: one per core; one without REDIS_URL), a killed worker replaced by gunicorn's master.
serve: migrate
	$(VENV)/bin/gunicorn -c config/gunicorn.py -b $(HOST):$(PORT)

# lint-imports: the layers, no door importing another, no cycle (pyproject.toml [tool.importlinter]).
test: install browser-deps
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

test-fast: install
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "not browser and not production"

# The dashboard's chart library, committed as a built file (no CDN at runtime); this re-fetches it from npm.
CHARTJS_VERSION ?= 4.5.1
vendor:
	@tmp=$$(mktemp -d) && cd $$tmp && npm pack -s chart.js@$(CHARTJS_VERSION) >/dev/null && tar xzf chart.js-$(CHARTJS_VERSION).tgz && \
	  cp package/dist/chart.umd.min.js $(CURDIR)/static/vendor/chart.umd.min.js && \
	  cp package/LICENSE.md $(CURDIR)/static/vendor/chart.js.LICENSE.md && rm -rf $$tmp && \
	  echo "static/vendor/chart.umd.min.js = chart.js $(CHARTJS_VERSION)"

# The gateway benchmark's load generator is Debian's wrk (C, closed-loop; a Python client would be the bottleneck).
bench-deps:
	@command -v wrk >/dev/null || { echo "installing wrk (apt)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q wrk >/dev/null; else sudo apt-get install -y -q wrk >/dev/null; fi; }

bench: install bench-deps
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# The project's docs (docs/, mkdocs.yml); strict: a broken link or a page missing from the nav fails.
docs: install
	$(VENV)/bin/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) var site .test-*.sqlite3* *.egg-info
