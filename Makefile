# astroembed developer commands. Every target creates/uses .venv; nothing is installed globally.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo-output
# CPU wheel of torch, installed before the project so the `train` extra never resolves to a
# multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-fast test-gpu docs bench bench-crossmatch bench-encoders bench-embed bench-probe bench-demo bench-bricks model model-scores clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[cpu,train,test]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/astroembed simulate $(DEMO)/survey --n-galaxies 6000 --seed 0 --overwrite
	$(VENV)/bin/astroembed crossmatch $(DEMO)/survey/legacysurvey $(DEMO)/survey/desi --out $(DEMO)/matched --overwrite
	$(VENV)/bin/astroembed embed --catalog $(DEMO)/matched
	$(VENV)/bin/astroembed probe --catalog $(DEMO)/matched --target redshift --method all --out $(DEMO)/probe --save $(DEMO)/z_probe --overwrite

# The tests run on every core (pytest-xdist); `.venv/bin/python -m pytest` runs them in one process.
test: install
	$(PY) -m pytest -q -n auto

test-fast: install
	$(PY) -m pytest -q -n auto -m "not slow"

# The checks that need a GPU, on a machine with one: a separate environment with the GPU build of
# onnxruntime (the CPU and GPU builds never share an environment), `astroembed doctor` on CUDA,
# then the tests marked gpu (they skip where CUDA is not usable).
GPU_VENV := .venv-gpu
test-gpu:
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GPU_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(GPU_VENV)/bin/python -m pip install --quiet -e ".[gpu,train,test]"
	$(GPU_VENV)/bin/astroembed doctor --device cuda
	$(GPU_VENV)/bin/python -m pytest -q -m gpu -rs

# docs/cli.md, the command reference, from every command's --help (tests/test_docs.py checks it).
docs: install
	$(PY) scripts/cli_reference.py

# Benchmarks (bench/README.md has every result with its command). Cross-match peers: LSDB,
# hats-import, astropy, STILTS, bare cKDTree.
# STILTS comes from Debian (apt-get install -y stilts); without it that peer is reported as missing.
# Each part alone: make bench-crossmatch | bench-embed | bench-encoders | bench-probe | bench-bricks.
# bench-embed also measures how the pixel arrays are stored (bench/parquet_encoding.py).
BENCH_SIZES ?= 1e5,1e6,1e7
bench: bench-crossmatch bench-encoders bench-embed bench-probe bench-demo bench-bricks

# Stamps cut from full-size simulated brick coadds against decompressing their rows alone.
bench-bricks: install
	$(PY) bench/brick_bench.py --objects 10000 --repeat 3

bench-demo: install
	$(PY) bench/demo_bench.py

bench-crossmatch: install
	$(PY) -m pip install --quiet -e ".[cpu,train,test,bench]"
	$(PY) bench/crossmatch_bench.py --sizes $(BENCH_SIZES)

bench-encoders: install
	$(PY) bench/encoder_bench.py --batch 256

bench-embed: install
	$(PY) bench/embed_bench.py --sizes 2000,20000 --repeat 3
	$(PY) bench/parquet_encoding.py --rows 2000 --repeat 5

bench-probe: install
	test -d $(DEMO)/matched || $(MAKE) demo
	$(PY) bench/probe_bench.py --sizes 1e4,1e5,1e6 --demo $(DEMO)/matched

# The default model (astroembed/data/models/default): simulate a 20,000-galaxy survey, cross-match,
# train (pipelines/default-model.toml), export to ONNX, then measure it on a held-out survey
# (other seeds) with bench/model_quality.py (model-scores). Work files go to $(MODEL_WORK). The model card
# is docs/MODEL_CARD.md, copied into the model directory.
MODEL_WORK ?= build/model
MODEL_DIR  := astroembed/data/models/default
model: install
	$(VENV)/bin/astroembed -q simulate $(MODEL_WORK)/train-survey --n-galaxies 20000 --seed 101 --overwrite
	$(VENV)/bin/astroembed -q crossmatch $(MODEL_WORK)/train-survey/legacysurvey $(MODEL_WORK)/train-survey/desi --out $(MODEL_WORK)/train-matched --overwrite
	rm -rf $(MODEL_WORK)/trained
	$(VENV)/bin/astroembed train --catalog $(MODEL_WORK)/train-matched --out $(MODEL_WORK)/trained --config pipelines/default-model.toml
	$(VENV)/bin/astroembed export $(MODEL_WORK)/trained --out $(MODEL_DIR).new --overwrite
	cp docs/MODEL_CARD.md $(MODEL_DIR).new/MODEL_CARD.md
	rm -rf $(MODEL_DIR) && mv $(MODEL_DIR).new $(MODEL_DIR)
	$(MAKE) model-scores

# The default model's scores on two held-out surveys, each another seed: validation (303), the
# one model variants are compared on, and test (404), scored once per released model; the
# model card quotes the test scores.
model-scores: install
	$(call score,validation,303)
	$(call score,test,404)

define score
	$(VENV)/bin/astroembed -q simulate $(MODEL_WORK)/$(1)-survey --n-galaxies 20000 --seed $(2) --overwrite
	$(VENV)/bin/astroembed -q crossmatch $(MODEL_WORK)/$(1)-survey/legacysurvey $(MODEL_WORK)/$(1)-survey/desi --out $(MODEL_WORK)/$(1)-matched --overwrite
	$(PY) bench/model_quality.py --catalog $(MODEL_WORK)/$(1)-matched --survey $(MODEL_WORK)/$(1)-survey --split $(1) --json bench/results/model_quality_$(1).json
endef

clean:
	rm -rf $(VENV) $(GPU_VENV) $(DEMO) .pytest_cache .hypothesis
