# Set-up happens here: each target creates the virtual environment it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stglm-installed

.PHONY: test demo lint bench test-all test-min docs docs-min clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

## make test: the test suite (slow checks excluded; `make test-all` runs them too), on
## TEST_WORKERS processes (pytest-xdist; CI has 2 cores). Idle workers steal queued tests, so
## that the few long ones do not leave a worker waiting. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST := -m pytest -q -n $(TEST_WORKERS) --dist worksteal
test: $(STAMP)
	$(PY) $(PYTEST)

test-all: $(STAMP)
	$(PY) $(PYTEST) -m ""

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
	NUMBA_CACHE_DIR=$(MIN_VENV)/numba-cache $(MIN_VENV)/bin/python $(PYTEST) -p no:cacheprovider

## make demo: the main job on the bundled Visium prostate data
demo: $(STAMP)
	$(PY) -m stglm.demo --out demo_output

## make lint: ruff (numpy docstring convention) and radon's cyclomatic complexity ≤ 20
lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks tools docs
	$(PY) -m ruff format --check src tests benchmarks tools docs
	$(PY) tools/check_complexity.py

## make bench: benchmark peers too (glum, threadpoolctl; R glmnet if Rscript is installed)
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/run_all.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/bench_genes.py

## make docs: the documentation site in docs/_build/html (Sphinx; every tutorial notebook runs on
## the bundled data; warnings are errors), then docs/check_site.py checks the built site: every
## public name in the API reference, no broken internal link or image.
DOCS_STAMP := $(VENV)/.stglm-docs-installed
SPHINX_OPTS ?= -W --keep-going -q
$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	rm -rf docs/_build docs/api/generated
	$(PY) -m sphinx -b html $(SPHINX_OPTS) docs docs/_build/html
	$(PY) docs/check_site.py docs/_build/html

## make docs-min: the site built with exactly the docs extra's declared floors (.venv-docs-min)
DOCS_MIN_VENV := .venv-docs-min
docs-min:
	$(PYTHON) -m venv $(DOCS_MIN_VENV)
	$(DOCS_MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DOCS_MIN_VENV)/bin/python tools/min_constraints.py --extra docs > $(DOCS_MIN_VENV)/constraints.txt
	$(DOCS_MIN_VENV)/bin/python -m pip install --quiet -c $(DOCS_MIN_VENV)/constraints.txt -e ".[docs]"
	$(DOCS_MIN_VENV)/bin/python -m pip check
	rm -rf docs/_build/html-min docs/api/generated
	NUMBA_CACHE_DIR=$(DOCS_MIN_VENV)/numba-cache $(DOCS_MIN_VENV)/bin/python -m sphinx -b html \
	    $(SPHINX_OPTS) -d docs/_build/doctrees-min docs docs/_build/html-min
	$(DOCS_MIN_VENV)/bin/python docs/check_site.py docs/_build/html-min

clean:
	rm -rf $(VENV) $(MIN_VENV) $(DOCS_MIN_VENV) demo_output .pytest_cache docs/_build docs/api/generated
