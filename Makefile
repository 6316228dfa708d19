# Set-up is part of every target: a fresh clone needs only `make run` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-slow lint methods

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

# Every method on the toy world, 3 seeds: the README's "Methods compared" table (about an hour on 2 CPU cores).
METHODS_DIR ?= outputs/methods
methods: setup  ## fine-tuning, LP-FT, FLYP (+ Fisher merge) x 3 seeds, then soups and Model Stock, then one table
	$(PY) train.py -m finetune=e2e,lpft,flyp seed=0,1,2 wiseft.fisher.examples=512 hydra.sweep.dir=$(METHODS_DIR)/runs
	$(PY) -m wiseft.pipeline.merge $(METHODS_DIR)/runs --out $(METHODS_DIR)/merge
	$(PY) -m wiseft.review.compare $(METHODS_DIR)/runs $(METHODS_DIR)/merge --out $(METHODS_DIR)

lint: setup
	$(VENV)/bin/ruff check .
