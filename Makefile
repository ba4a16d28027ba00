# crystalvision: `make run` installs everything and runs the quickstart pipeline; `make test` runs the tests.
SHELL := /bin/bash
, := ,
.SHELLFLAGS := -eo pipefail -c
# The interpreter for the virtual environment: Python 3.11 to 3.13 (what the pinned torch/Ray/VTK wheels cover).
# `python3` when it is one of those, else the newest python3.13/3.12/3.11 on PATH; override with PYTHON=...
PY_OK := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))
ifndef PYTHON
PYTHON := $(shell for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p -c '$(PY_OK)' 2>/dev/null && { echo $$p; break; }; done)
endif
# CPU-only torch: `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu` (about 1 GB less; see README)
TORCH_INDEX ?=
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := libegl1 libgl1-mesa-dri libosmesa6 libgomp1
# Only the tests need these: a PostgreSQL server (production MLflow test) and a real headless browser (MLflow UI test).
TEST_APT_PACKAGES := postgresql chromium chromium-driver
PIP_FILTER := sed -e '/is ignored: it is neither a file nor a directory/d'
STAMP := $(VENV)/.crystalvision-installed
PIPELINE ?= pipelines/quickstart.yaml

.PHONY: setup system-deps test-deps run test lint bench clean

setup: system-deps $(STAMP)

# apt-install the packages of $(1) that are missing; $(2) says what they are for.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing ($(2))"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

system-deps:
	$(call apt_install,$(APT_PACKAGES),offscreen OpenGL for VTK rendering$(,) OpenMP for torch)

test-deps:
	$(call apt_install,$(TEST_APT_PACKAGES),for the tests: PostgreSQL server$(,) headless Chromium + driver)

$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  if [ -z "$(PYTHON)" ] || ! $(PYTHON) -c '$(PY_OK)' 2>/dev/null; then \
	    echo "error: crystalvision needs Python 3.11, 3.12 or 3.13; $(if $(PYTHON),$(PYTHON) is $$($(PYTHON) -V 2>/dev/null || echo 'not runnable'),none is on PATH)."; \
	    echo "  install one, e.g. 'sudo apt-get install python3.12 python3.12-venv' or 'pyenv install 3.12',"; \
	    echo "  or point at it: make run PYTHON=/path/to/python3.12"; exit 1; \
	  fi; \
	  echo "using $(PYTHON) ($$($(PYTHON) -c 'import sys; print(sys.version.split()[0])')) for $(VENV)"; \
	  $(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed; install its venv module (Debian: python3.X-venv)"; exit 1; }; \
	fi
	@echo "installing Python packages into $(VENV): about 8 GB installed, most of it torch 2.14.1 with its CUDA"
	@echo "  libraries, then Ray, MLflow, VTK, pymatgen (first time: minutes, depending on the network)."
	@echo "  CPU-only machine? 'make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu' (see README)."
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) 2>&1 | $(PIP_FILTER)
	$(BIN)/pip install -q -e ".[test]" 2>&1 | $(PIP_FILTER)
	@touch $(STAMP)

run: setup
	$(BIN)/crystalvision pipeline run $(PIPELINE)
	@echo "next: 'source $(VENV)/bin/activate' once per shell; the commands in README.md and docs/ are written for it"

# One pytest process per test file (tests/run_files.py), then one total line: no module's Ray session or library
# state leaks into the next.
test: setup test-deps lint
	$(BIN)/python tests/run_files.py

# One lint for `make lint`, `make test` and CI (.ci/run): ruff's rules, and ruff's formatting of the Python files and
# of the Python blocks in the Markdown pages (README.md, docs/).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/crystalvision bench

clean:
	rm -rf .crystalvision .pytest_cache
