# Set-up happens here: each target creates the virtual environment it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stglm-installed

.PHONY: test demo lint bench test-all clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

## make test: the test suite (slow checks excluded; `make test-all` runs them too)
test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

## make demo: the main job on the bundled Visium prostate data
demo: $(STAMP)
	$(PY) -m stglm.demo --out demo_output

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

## make bench: benchmark peers too (glum, threadpoolctl; R glmnet if Rscript is installed)
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/run_all.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/bench_genes.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
