# kmdist: `make demo`, `make test`, `make lint`, `make bench`, `make format`.
# Every target builds .venv with Python 3.12+ first (scripts/find-python picks it) and
# reinstalls the project when pyproject.toml changes.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kmdist-installed
PYTEST_ARGS ?=

.PHONY: demo test lint format bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/find-python deploy/requirements.txt
	@set -e; \
	if [ -x $(PY) ] && $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	  echo "Using existing $(VENV) ($$($(PY) --version))"; \
	else \
	  py=$$(scripts/find-python); \
	  echo "Creating $(VENV) with $$py ($$($$py --version))"; \
	  rm -rf $(VENV); "$$py" -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	# The deploy image's pins constrain the dev environment too: one set of versions.
	$(PY) -m pip install --quiet -e '.[dev,plot]' -c deploy/requirements.txt
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/kmdist demo --output demo-output

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The benchmarks' peers (dask-ml, OpenCV) are only needed here.
BENCH_STAMP := $(VENV)/.kmdist-bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,plot,bench]' -c deploy/requirements.txt
	@touch $@

bench: $(BENCH_STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache .hypothesis
