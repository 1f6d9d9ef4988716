# `make test` and `make demo` work on a fresh machine: they create .venv, install
# the CPU build of torch first (so no CUDA build is pulled in), then igcorr itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.igcorr-installed
DOCS_STAMP := $(VENV)/.igcorr-docs-installed

.PHONY: install test demo bench bench-accuracy bench-voxels docs clean

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

# about an hour on 2 cores; W3 uses 4 steps (its ratio does not depend on them, and without the readout
# shortcut each path point costs 2,000 backward passes)
bench: $(STAMP)
	$(PY) benchmarks/bench_igc.py --workloads W1 --steps 64 --reference-steps 96 --no-variants --out benchmarks/results/w1
	$(PY) benchmarks/bench_igc.py --workloads W2 --steps 64 --reference-steps 256 --out benchmarks/results/w2
	$(PY) benchmarks/bench_igc.py --workloads W3 --steps 4 --reference-steps 16 --out benchmarks/results/w3
	$(MAKE) bench-accuracy

# the accuracy table (map_tolerance against Captum and igcorr's fixed rules, docs/speed.md): about 15 minutes
# on 2 cores; W1 at the issue's 128 images
bench-accuracy: $(STAMP)
	$(PY) benchmarks/bench_igc.py --workloads W1 --scale 0.25 --map-tolerance 0.01 --reference-steps 128 --out benchmarks/results/accuracy-w1
	$(PY) benchmarks/bench_igc.py --workloads W2 --scale 1.0 --map-tolerance 0.01 --reference-steps 256 --out benchmarks/results/accuracy-w2

# IGC at 10,000 and 100,000 voxels, each in a fresh process: time, peak memory, budget (docs/prf.md); about
# 4 minutes on 2 cores
bench-voxels: $(STAMP)
	$(PY) benchmarks/bench_voxels.py --out benchmarks/results/voxels.json

# the documentation site, built offline into site/ (the docs extra: mkdocs, mkdocstrings)
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) igcorr-out .pytest_cache
