# Set-up is part of every target: a fresh clone needs only `make run` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-slow lint

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: setup  ## the default job: the offline toy benchmark
	$(PY) train.py $(ARGS)

test: setup  ## fast suite (the default; CI runs it)
	$(PY) -m pytest $(ARGS)

test-slow: setup  ## slow checks (pretraining rebuild, the default job's WiSE-FT pattern)
	$(PY) -m pytest -m slow $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
