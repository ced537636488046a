# The two commands of the README:  make demo   and   make test
# Each sets up .venv on its own (scripts/bootstrap.sh, idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
# Data root: DATA=... on the command line, else $PAIRFLOW_DATA, else ./data (downloaded on demand).
DATA ?= $(or $(PAIRFLOW_DATA),data)
OUT ?= runs/demo
# Test processes (pytest-xdist), each with its share of the torch threads.
TEST_WORKERS ?= 2

.PHONY: setup demo test lint
setup:
	@bash scripts/bootstrap.sh $(VENV)

demo: setup
	$(PY) -m pairflow demo --data-dir $(DATA) --out $(OUT)

test: setup
	PAIRFLOW_DATA=$(abspath $(DATA)) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
