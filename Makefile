# Entry points for the local stack, tests and linters (run from the repository root, as root on CI).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PY := .venv/bin/python
STACK := $(PY) scripts/stack.py
# The URLs and credentials of the running stack; they override an admin DATABASE_URL/REDIS_URL
# the caller may have exported for `stack.py up`.
LOAD_ENV := set -a; . var/local.env; set +a

.PHONY: help bootstrap frontend frontend-check ohif up down status demo test lint bench

help:
	@echo "make bootstrap|frontend|frontend-check|ohif|up|down|status|demo|test|lint|bench  (PYTEST_ARGS=... for test)"

bootstrap:
	scripts/bootstrap.sh

# The browser viewer (frontend/): bootstrap has run `npm ci` from the committed lock file; Vite builds
# frontend/dist/, which Django serves under /static/viewer/. Rebuilt only when a source file changed.
FRONTEND_SOURCES := $(shell find frontend/src -type f 2>/dev/null) frontend/package-lock.json \
	frontend/vite.config.ts frontend/tsconfig.json
frontend/dist/viewer.js: $(FRONTEND_SOURCES)
	cd frontend && npm run build
	touch $@

frontend: bootstrap frontend/dist/viewer.js

# Type check, lint and unit tests of the viewer (vitest), without a browser.
frontend-check: bootstrap
	cd frontend && npm run typecheck && npm run lint && npm test

# OHIF Viewer v3's prebuilt release (npm pack, pinned integrity) for the conformance test, in var/ohif/dist.
ohif: bootstrap
	scripts/fetch_ohif.sh

up: bootstrap frontend
	$(STACK) up

down: bootstrap
	$(STACK) down

status: bootstrap
	$(STACK) status

# Ctrl-C stops following the log only; the stack keeps running until `make down`.
demo: up
	$(LOAD_ENV); $(PY) manage.py seed_demo
	@$(LOAD_ENV); \
	    echo; echo "ReadRoom is running at $$READROOM_URL (Ctrl-C stops following the log; make down stops the stack)"; echo; \
	    tail -n 0 -F var/log/web.log var/log/worker.log & tail_pid=$$!; \
	    trap 'kill $$tail_pid 2>/dev/null; echo; echo "Still running at $$READROOM_URL; stop it with: make down"; exit 0' INT TERM; \
	    wait $$tail_pid

test: bootstrap frontend frontend-check ohif
	$(STACK) up --no-web
	$(LOAD_ENV); DJANGO_SETTINGS_MODULE=saas.config.settings.test $(PY) -m pytest $(PYTEST_ARGS)

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	cd frontend && npm run typecheck && npm run lint

bench: up
	$(LOAD_ENV); DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-saas.config.settings.local} $(PY) -m tests.bench
