# `make test` and `make demo` work on a fresh machine: they create .venv, install
# the CPU build of torch first (so no CUDA build is pulled in), then igcorr itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.igcorr-installed

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/igcorr demo

bench: $(STAMP)
	$(PY) benchmarks/bench_igc.py --out benchmarks/results

clean:
	rm -rf $(VENV) igcorr-out .pytest_cache
