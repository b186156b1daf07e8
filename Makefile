# Two entry points do every set-up step on a fresh machine:
#   make study   venv + packages + system libraries, then the study's DAG (dvc.yaml on params.yaml) through the
#                Prefect flow, two stages at a time; `dvc repro` runs the same DAG one stage at a time
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

.PHONY: setup system-deps study smoke test bench-collect bench-lam bench-evaluate clean-venv study-parallel audit \
	bench-action-vq bench-extract bench-finetune

setup: system-deps $(INSTALLED)

system-deps:
	@bash scripts/install_system_deps.sh

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

# The DAG as a Prefect flow: independent stages (the strategy x seed matrix, the baseline beside the LAM) run side
# by side, each as `dvc --wait-for-lock repro --single-item <stage>`, with retries and MLflow lineage; ends with
# `dvc status` clean. Two at a time by default (one per core; each training stage uses one torch thread).
# FLOW_ARGS, e.g. FLOW_ARGS="--max-parallel 4 --runner dask" or a list of stages to bring up to date.
FLOW_ARGS ?= --max-parallel 2
study study-parallel: setup
	$(PY) -m flows $(FLOW_ARGS)

# The whole DAG at toy sizes (configs/smoke.yaml) in a temporary git + DVC copy of the project, through the flow.
smoke: setup
	$(PY) -m pytest tests/flows/test_smoke_dag.py

# For every evaluation (or AUDIT_ARGS="--metric metrics/evaluate/la_tok-0.json:success.rate"): the chain of
# stages with hashes and params; fails if the files, dvc.lock and MLflow disagree.
AUDIT_ARGS ?=
audit: setup
	$(PY) -m flows.audit $(AUDIT_ARGS)

test: setup
	$(PY) -m pytest

bench-collect: setup
	$(PY) -m benchmarks.collect_throughput

bench-lam: setup   # needs the collected data: `dvc repro collect`
	$(PY) -m benchmarks.lam_training

bench-evaluate: setup   # needs `dvc repro finetune@baseline-0` (before training: `--policies tiny expert`)
	$(PY) -m benchmarks.evaluate_throughput

bench-action-vq: setup   # needs `dvc repro action_vq`: the trained tokenizer beside the k-means floor
	$(PY) -m benchmarks.action_vq

bench-extract: setup   # needs `dvc repro action_vq` (and lam): LAM and tokenizer steps/s by batch size
	$(PY) -m benchmarks.extract_throughput

bench-finetune: setup   # needs `dvc repro collect`: default finetune samples/s, data wait, memory, FLOP/s
	$(PY) -m benchmarks.finetune_throughput

clean-venv:
	rm -rf $(VENV)

.PHONY: bench-cpu-pins
bench-cpu-pins: setup   # needs `dvc repro collect`: finetune samples/s with and without the AVX2 kernel pins (~2 min)
	$(PY) -m benchmarks.cpu_pins

.PHONY: bench-input-reliance
bench-input-reliance: setup   # needs `dvc repro finetune@baseline-0 reference`: does a policy read its images? (~1 min)
	$(PY) -m benchmarks.input_reliance models/finetune/baseline-0 models/reference
