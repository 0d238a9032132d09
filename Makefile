# devsupervisor: development tasks, and the compose flows that work without the daemon.
#
#   make install | lint | test | test-fast | demo | bench
#   make skeleton-up | skeleton-down | fullstack-up | fullstack-down | e2e-skeleton | platform-image
#
# The flows run on the real cornjacket stack (docker-compose/) by default, on the offline demo
# stack with STACK_DIR=examples/demo-stack. Compose project name: COMPOSE_PROJECT=...
# Volumes are never removed by the *-down flows; e2e-skeleton runs in its own throw-away project.

# bash for `set -o pipefail` and a trap that also fires on Ctrl-C in e2e-skeleton.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
DOCKER ?= docker

STACK_DIR ?= docker-compose
# The demo stack gets its own project name by default so it never touches the real stack's volumes.
ifeq ($(patsubst %/,%,$(STACK_DIR)),examples/demo-stack)
COMPOSE_PROJECT ?= devsup-demo
else
COMPOSE_PROJECT ?= cornjacket
endif
# e2e runs are torn down with their volumes, so they must never share the dev project's.
E2E_PROJECT ?= $(COMPOSE_PROJECT)-e2e
PLATFORM_DIR ?= examples/platform-services

# One -f per file; compose resolves relative paths inside from the first file's directory.
BASE_FILES := -f $(STACK_DIR)/docker-compose.yaml
SKELETON_FILES := $(BASE_FILES) -f $(STACK_DIR)/docker-compose.monolith.yaml
FULLSTACK_FILES := $(SKELETON_FILES) -f $(STACK_DIR)/docker-compose.fullstack.yaml
E2E_FILES := $(SKELETON_FILES) -f $(STACK_DIR)/docker-compose.e2e.yaml

COMPOSE := $(DOCKER) compose -p $(COMPOSE_PROJECT)
E2E_COMPOSE := $(DOCKER) compose -p $(E2E_PROJECT) $(E2E_FILES)

# A stack directory may bring a script that builds its local images (the demo stack does).
STACK_IMAGES := $(if $(wildcard $(STACK_DIR)/build-images),stack-images)

.PHONY: help install lint test test-fast demo bench prereqs stack-images platform-image \
	skeleton-up skeleton-down fullstack-up fullstack-down e2e-skeleton

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

# The venv is (re)made when pyproject.toml changes, so `make test` / `make demo` work on a fresh
# clone without a separate install step.
INSTALLED := $(VENV)/.installed

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: prereqs $(INSTALLED)
	examples/demo-stack/build-images
	$(VENV)/bin/pytest

# The fast tier: the core's owners driven through their seams (fake clock, targets, compose);
# needs no Docker engine.
test-fast: $(INSTALLED)
	$(VENV)/bin/pytest tests/fast

demo: prereqs $(INSTALLED)
	examples/demo-stack/build-images
	$(VENV)/bin/devsup run --config config/demo.yaml

bench: prereqs $(INSTALLED)
	examples/demo-stack/build-images
	$(VENV)/bin/python benchmarks/run_all.py

prereqs:
	scripts/prereqs

stack-images:
	$(STACK_DIR)/build-images

# The host binary first: Dockerfile.scratch wraps it, and the multi-stage Dockerfile ignores it.
platform-image: $(STACK_IMAGES)
	cd $(PLATFORM_DIR) && CGO_ENABLED=0 go build -o bin/platform ./cmd
	$(COMPOSE) $(SKELETON_FILES) build platform

skeleton-up: platform-image
	$(COMPOSE) $(SKELETON_FILES) up -d --wait --remove-orphans

# --remove-orphans also takes down fullstack-only services left by fullstack-up.
skeleton-down:
	$(COMPOSE) $(SKELETON_FILES) down --remove-orphans

fullstack-up: platform-image
	$(COMPOSE) $(FULLSTACK_FILES) --profile fullstack up -d --wait

fullstack-down:
	$(COMPOSE) $(FULLSTACK_FILES) --profile fullstack down --remove-orphans

# Exit code is the runner's (--exit-code-from); the trap tears the project down whatever happens.
e2e-skeleton: platform-image
	trap '$(E2E_COMPOSE) down -v --remove-orphans' EXIT; \
	trap 'exit 130' INT TERM; \
	$(E2E_COMPOSE) up --exit-code-from e2e-runner e2e-runner
