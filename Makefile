# The few verbs a newcomer needs. Everything runs inside .venv at the repo root.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# A Python >= 3.12 (pandas-ta needs it): the pinned one first, then any other.
PYTHON_CANDIDATES := python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) python3.13 $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3) python3
FIND_PYTHON := for p in $(PYTHON_CANDIDATES); do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then command -v $$p; break; fi; \
	done

# Tests get their own database and Redis key space per checkout, so two
# clones on one machine never see each other's rows, queues or cache.
CHECKOUT_ID := $(shell printf '%s' "$(CURDIR)" | sha1sum | cut -c1-8)
TEST_ENV := DATABASE_URL=postgres://postgres@127.0.0.1:5432/tradeeon_$(CHECKOUT_ID) \
	REDIS_URL=redis://127.0.0.1:6379/0 CACHE_KEY_PREFIX=t$(CHECKOUT_ID) \
	CELERY_BROKER_URL=redis://127.0.0.1:6379/0 CELERY_REDIS_KEY_PREFIX=t$(CHECKOUT_ID): \
	TRADEEON_VAR_DIR=$(CURDIR)/var/test

.PHONY: help venv test demo web worker beat lint format bench migrate

help:
	@echo "make demo    replay real candles through the pipeline on SQLite, offline"
	@echo "make test    install what is needed and run the whole suite (PostgreSQL + Redis)"
	@echo "make web | worker | beat    run one production process locally"
	@echo "make lint    ruff check and format check"
	@echo "make bench   shared evaluation against one evaluation per alert (PostgreSQL + Redis)"

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	@if [ ! -x $(PY) ]; then \
	  python=$$($(FIND_PYTHON)); \
	  if [ -z "$$python" ]; then echo "error: no Python >= 3.12 found (pyenv install 3.12, see DEVELOPERS.md)" >&2; exit 1; fi; \
	  echo "creating $(VENV) with $$python"; \
	  $$python -m venv $(VENV) || exit 1; \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	@touch $@

venv: $(VENV)/.installed

test: venv
	@scripts/ensure_services.sh
	$(TEST_ENV) $(PY) manage.py check --fail-level WARNING
	$(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: venv
	$(PY) manage.py demo

# The benchmark makes (and drops) scratch databases of its own next to this one.
BENCH_ENV := DATABASE_URL=postgres://postgres@127.0.0.1:5432/tradeeon_bench_$(CHECKOUT_ID) \
	REDIS_URL=redis://127.0.0.1:6379/0 CACHE_KEY_PREFIX=b$(CHECKOUT_ID) \
	CELERY_BROKER_URL=redis://127.0.0.1:6379/0 CELERY_REDIS_KEY_PREFIX=b$(CHECKOUT_ID): \
	TRADEEON_VAR_DIR=$(CURDIR)/var/bench

bench: venv
	@scripts/ensure_services.sh
	$(BENCH_ENV) $(PY) manage.py bench $(BENCH_ARGS)

migrate: venv
	$(PY) manage.py migrate

web: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py runserver 127.0.0.1:8000

worker: venv
	$(VENV)/bin/celery -A tradeeon worker -Q default,evaluate -l info

beat: venv
	$(VENV)/bin/celery -A tradeeon beat -l info

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
