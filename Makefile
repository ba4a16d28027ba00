# crystalvision: `make run` installs everything and runs the quickstart pipeline; `make test` runs the tests.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := libegl1 libgl1-mesa-dri libosmesa6 libgomp1 postgresql
PIP_FILTER := sed -e '/is ignored: it is neither a file nor a directory/d'
STAMP := $(VENV)/.crystalvision-installed
PIPELINE ?= pipelines/quickstart.yaml

.PHONY: setup system-deps run test lint bench clean

setup: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (first time: a few minutes)"
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | $(PIP_FILTER)
	$(BIN)/pip install -q -e ".[test]" 2>&1 | $(PIP_FILTER)
	@touch $(STAMP)

run: setup
	$(BIN)/crystalvision pipeline run $(PIPELINE)

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/crystalvision bench

clean:
	rm -rf .crystalvision .pytest_cache
