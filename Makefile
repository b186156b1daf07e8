# Two entry points do every set-up step on a fresh machine:
#   make study   venv + packages + system libraries, then `dvc repro` on params.yaml
#   make test    the same set-up, then the test suite
# Both are idempotent: a second call only reruns what changed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# dvc.yaml's commands call `python`: the venv's.
export PATH := $(abspath $(VENV))/bin:$(PATH)

# Offline, headless, quiet: no analytics, no hub look-ups, MuJoCo renders through EGL (Mesa on a CPU).
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= $(MUJOCO_GL)
export HF_HUB_OFFLINE ?= 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup system-deps study test bench-collect bench-lam clean-venv

setup: system-deps $(INSTALLED)

system-deps:
	@bash scripts/install_system_deps.sh

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

study: setup
	$(VENV)/bin/dvc repro

test: setup
	$(PY) -m pytest

bench-collect: setup
	$(PY) -m benchmarks.collect_throughput

bench-lam: setup   # needs the collected data: `dvc repro collect`
	$(PY) -m benchmarks.lam_training

clean-venv:
	rm -rf $(VENV)
