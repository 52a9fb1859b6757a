# astroembed developer commands. Every target creates/uses .venv; nothing is installed globally.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo-output
# CPU wheel of torch, installed before the project so the `train` extra never resolves to a
# multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[cpu,train,test]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/astroembed simulate $(DEMO)/survey --n-galaxies 2000 --seed 0 --overwrite
	$(VENV)/bin/astroembed inspect $(DEMO)/survey
	$(VENV)/bin/astroembed crossmatch $(DEMO)/survey/legacysurvey $(DEMO)/survey/desi --out $(DEMO)/matched --overwrite
	$(VENV)/bin/astroembed info $(DEMO)/matched

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# Peer benchmarks (DESIGN.md section 11): LSDB, hats-import, astropy, STILTS, bare cKDTree.
# STILTS comes from Debian (apt-get install -y stilts); without it that peer is reported as missing.
BENCH_SIZES ?= 1e5,1e6,1e7
bench: install
	$(PY) -m pip install --quiet -e ".[cpu,train,test,bench]"
	$(PY) bench/crossmatch_bench.py --sizes $(BENCH_SIZES)

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .hypothesis
