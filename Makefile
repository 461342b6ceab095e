# mdops: `make up` runs the local stack, `make test` runs every test.
# Everything runs from a virtualenv in .venv and a control plane built into ~/.cache/mdops.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DETACH ?=
detach_flag := $(if $(filter 1 yes true,$(DETACH)),--detach)

.PHONY: help venv k8s helm prometheus podman image chromium console screenshots lint generate test test-fast up demo cluster down status

help:
	@echo "make up        run the local stack (control plane, controller, API, simulator, Prometheus);"
	@echo "               DETACH=1 returns once it is ready"
	@echo "make test      lint and run every test"
	@echo "make test-fast the unit tier only: pure logic, no control plane (seconds)"
	@echo "make demo      a scripted session against the running stack (after make up DETACH=1)"
	@echo "make cluster   run the local control plane alone (DETACH=1 to return once ready)"
	@echo "make down      stop what DETACH=1 started"
	@echo "make status    each component of the stack (or cluster): pid, state, restarts, last exit"
	@echo "make generate  regenerate the CRDs from their models, the chart's generated files, the"
	@echo "               README's settings tables and the API's OpenAPI document (docs/openapi.json)"
	@echo "make image     build the image with podman (mdops:<version>); prints its tag and size"
	@echo "make console   the Ops Console's front-end libraries (npm ci, copied into api/console/vendor/)"
	@echo "make screenshots  the README's pictures of the console (docs/*.png), from the browser tests"

# The stamp's name holds pyproject.toml's hash: new content is a new stamp, installed again; not a newer
# file (a fresh checkout, or a git worktree sharing this virtualenv, whose install would then point at it).
$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

k8s:
	tools/build-k8s.sh >/dev/null

# helm, for the packaging tests (charts/mdops), from tools/helm/ into ~/.cache/mdops/helm.
helm:
	tools/build-helm.sh >/dev/null

generate: venv console
	$(PY) -m runbooks.crd --write manifests
	$(PY) charts/generate.py
	$(PY) -m devcluster.settings_doc
	$(PY) -m api.openapi > docs/openapi.json

# The reference scripts are Python without a .py suffix: name them explicitly.
SCRIPTS := $(shell grep -l '^\#!/usr/bin/env python3' examples/scripts/* 2>/dev/null)

lint: venv
	$(VENV)/bin/ruff check . $(SCRIPTS)
	$(VENV)/bin/ruff format --check . $(SCRIPTS)

# Debian's prometheus package, installed once (the tests start their own servers).
prometheus:
	tools/install-prometheus.sh >/dev/null

# Debian's podman, buildah, runc and mmdebstrap, installed once: the image tests build and run the image.
podman:
	tools/install-podman.sh >/dev/null

# The image, built with podman on the official Python base, or on a Debian base bootstrapped here
# when no registry is reachable (both cached); tools/build-image.sh prints the tag, the size and
# the time it took.
image:
	tools/build-image.sh

# Debian's chromium, for the browser tests (tests/browser; never a browser download of Playwright's own).
chromium:
	command -v chromium >/dev/null || tools/apt-install.sh chromium

# The console's libraries, pinned by package-lock.json, copied where the API serves them; again only when
# package.json or the lockfile changed.
CONSOLE_STAMP := api/console/vendor/.built
$(CONSOLE_STAMP): package.json package-lock.json tools/build-console.sh
	tools/build-console.sh
	@touch $@

console: $(CONSOLE_STAMP)

# docs/console-*.png, as the browser tests see the console (they save them when MDOPS_SCREENSHOTS is set).
screenshots: venv k8s prometheus chromium console
	MDOPS_SCREENSHOTS=docs $(PY) -m pytest tests/browser -q

# Most of a test's time is spent waiting (for a controller, a Job, a browser): three workers, each with
# its own control plane, keep the two cores busy. TEST_WORKERS=0 runs the tests in this process.
TEST_WORKERS ?= 3
test: lint k8s helm prometheus podman chromium console
	$(PY) -m pytest -n $(TEST_WORKERS)

# The unit tier (tests/unit): no control plane, no Prometheus, no Helm.
test-fast: venv console
	$(PY) -m pytest -m unit -q

up: venv console
	$(PY) -m devcluster up $(detach_flag)

cluster: venv
	$(PY) -m devcluster up --cluster-only $(detach_flag)

demo: venv
	$(PY) -m devcluster.demo

down: venv
	$(PY) -m devcluster down

status: venv
	$(PY) -m devcluster status
