# Set-up happens here: each target creates the virtual environment it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stglm-installed

.PHONY: test demo lint bench test-all test-min clean

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

## make test-min: the suite on exactly the minimum versions pyproject.toml declares, in
## .venv-min (tools/min_constraints.py writes the pins); slower, so not part of `make test`.
## numba's cache goes to .venv-min: another numba version would overwrite .venv's kernels.
MIN_VENV := .venv-min
test-min:
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python tools/min_constraints.py > $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/python -m pip install --quiet -c $(MIN_VENV)/constraints.txt -e ".[test]"
	$(MIN_VENV)/bin/python -m pip check
	NUMBA_CACHE_DIR=$(MIN_VENV)/numba-cache $(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider

## make demo: the main job on the bundled Visium prostate data
demo: $(STAMP)
	$(PY) -m stglm.demo --out demo_output

## make lint: ruff (numpy docstring convention) and radon's cyclomatic complexity ≤ 20
lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks tools
	$(PY) -m ruff format --check src tests benchmarks tools
	$(PY) tools/check_complexity.py

## make bench: benchmark peers too (glum, threadpoolctl; R glmnet if Rscript is installed)
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/run_all.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/bench_genes.py

clean:
	rm -rf $(VENV) $(MIN_VENV) demo_output .pytest_cache
