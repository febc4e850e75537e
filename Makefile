# The README's two commands, and their helpers.
#
#   make test    every tox env in TOX_ENVS (lint, tests, terraform, smokes), bootstrapping .venv first
#   make demo    the whole service end to end on an embedded local AWS
#
# PYTHON picks the interpreter (>= 3.11), e.g. `make test PYTHON=python3.12`.
# TOX_ENVS lists what `make test` runs; add new tox envs there.

PYTHON ?= python3
VENV ?= .venv
TOX_ENVS ?= lint,py,integration,integration-localstack-quick,terraform,tf-scan,load-quick
TOX_ARGS ?=

BIN := $(VENV)/bin
MIN_PYTHON := 3.11
PY_CHECK := import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)

.DEFAULT_GOAL := help
.PHONY: help check-python venv test lint demo clean distclean

help:
	@echo "make test      the whole suite: tox envs $(TOX_ENVS)"
	@echo "make demo      run the service end to end locally (zipjobs demo)"
	@echo "make lint      ruff + mypy only"
	@echo "make venv      create $(VENV) with tox in it"
	@echo "make clean     remove tox envs and caches (keeps $(VENV)); distclean removes it too"

check-python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: '$(PYTHON)' not found; install Python >= $(MIN_PYTHON) or pass PYTHON=/path/to/python3.11" >&2; exit 1; }
	@$(PYTHON) -c '$(PY_CHECK)' || { \
	  echo "error: Python >= $(MIN_PYTHON) required, but $(PYTHON) is $$($(PYTHON) -V 2>&1); pass PYTHON=python3.11 (or newer)" >&2; exit 1; }

# The venv's own interpreter is checked too: an old .venv made by an older Python is rebuilt.
$(BIN)/python: | check-python
	@if [ -x $(BIN)/python ] && ! $(BIN)/python -c '$(PY_CHECK)' 2>/dev/null; then \
	  echo "$(VENV) uses $$($(BIN)/python -V 2>&1); recreating it with $(PYTHON)"; rm -rf $(VENV); fi
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)

# tox-uv: tox makes its environments with uv (seconds each, against about half
# a minute each with pip here; tox.ini's `requires` brings it to an older .venv).
$(BIN)/tox: $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade "tox>=4.11" "tox-uv>=1.11"
	@touch $@

venv: check-python $(BIN)/tox

test: venv
	$(BIN)/tox run -e $(TOX_ENVS) $(TOX_ARGS)

lint: venv
	$(BIN)/tox run -e lint $(TOX_ARGS)

# Reinstalled when pyproject.toml changes (new dependencies).
$(VENV)/.local-installed: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[local]"
	@touch $@

demo: check-python $(VENV)/.local-installed
	$(BIN)/zipjobs demo

clean:
	rm -rf .tox .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# ---- terraform/ and the Lambda package (owner: terraform helper) --------------
# make build      build/lambda.zip (+ lambda.manifest.json) for python3.13/arm64 (tools/build_lambda.py --help)
# make tf-check   terraform fmt + validate (offline with TF_PLUGIN_DIR) + checkov + trivy
# make tf-init / tf-plan / tf-apply / tf-destroy   the stack in terraform/ (your AWS credentials);
#   plan and apply build the package first. TF_ARGS passes options, e.g.
#   make tf-apply TF_ARGS="-var-file=prod.tfvars"   (terraform asks before changing anything)
#   TF_DIR runs them on another copy of the configuration (the terraform tests apply
#   their moto stack through these targets, with its endpoints in a *.auto.tfvars.json).
.PHONY: build tf-check tf-init tf-plan tf-apply tf-destroy
BUILD_ARGS ?=
TERRAFORM ?= terraform
TF_DIR ?= terraform
TF_ARGS ?=
TF_INIT_ARGS ?= $(if $(TF_PLUGIN_DIR),-plugin-dir=$(TF_PLUGIN_DIR),)

# The package pins its dependencies to the versions installed in $(VENV), so
# they are the project's (and the lambda extra's) tested ones.
$(VENV)/.lambda-installed: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[lambda]"
	@touch $@

build: check-python $(VENV)/.lambda-installed
	$(BIN)/python tools/build_lambda.py $(BUILD_ARGS)

tf-check: venv
	$(TERRAFORM) -chdir=terraform fmt -check -recursive
	$(TERRAFORM) -chdir=terraform init -backend=false -input=false $(if $(TF_PLUGIN_DIR),-plugin-dir=$(TF_PLUGIN_DIR),)
	$(TERRAFORM) -chdir=terraform validate
	$(BIN)/tox run -e tf-scan $(TOX_ARGS)

tf-init:
	$(TERRAFORM) -chdir=$(TF_DIR) init -input=false $(TF_INIT_ARGS)

# Plan and apply read build/lambda.manifest.json: a package built for another
# runtime or CPU than lambda_runtime/lambda_architecture fails the plan.
tf-plan: build
	$(TERRAFORM) -chdir=$(TF_DIR) plan $(TF_ARGS)

tf-apply: build
	$(TERRAFORM) -chdir=$(TF_DIR) apply $(TF_ARGS)

tf-destroy:
	$(TERRAFORM) -chdir=$(TF_DIR) destroy $(TF_ARGS)
