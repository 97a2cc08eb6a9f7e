# Two entry points for a fresh machine (Python 3.11 + pip): `make run` and `make test`.
# torch is installed first and pinned: any other version pulls a multi-GB CUDA build (STACK.md).
PYTHON ?= python3.11
VENV := .venv
PIP := $(VENV)/bin/pip --disable-pip-version-check -q
TORCH := torch==2.13.0

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(VENV)/.train: pyproject.toml | $(VENV)/bin/python
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[train]"
	touch $@

$(VENV)/.dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[dev]"
	touch $@ $(VENV)/.train

$(VENV)/.federated: pyproject.toml | $(VENV)/bin/python
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[train,federated]"
	touch $@ $(VENV)/.train

.PHONY: install run test federate
install: $(VENV)/.train

run: $(VENV)/.train  ## install, then run the training pipeline on the bundled Complete Journey data
	$(VENV)/bin/lightpersml run --profile quick

federate: $(VENV)/.federated  ## install the federated extra, then train the federated tier (8 store groups, DP)
	$(VENV)/bin/lightpersml federate

test: $(VENV)/.dev  ## install with dev extras, lint (ruff, import contracts), then run the whole test suite
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile  # 2 processes, a module each at a time
