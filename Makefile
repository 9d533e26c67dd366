# clustermine: `make install`, then `make test` and `make demo`. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= demo
SEED ?= 0
# Real-data parameters (PROFILE=paper); see docs/gpu_workflow.md
MODEL ?= ViT-H-14
PRETRAINED ?=
CHECKPOINT ?=
DATASET ?= paper
DATA_ROOT ?= $(HOME)/data
CORPUS ?= wordnet-na
PROMPTS ?= simple-7
NPROC ?= 1
FEATURE_ARGS ?=
CACHE_DIR ?= $(or $(CLUSTERMINE_CACHE),.cache)/features
export HF_HUB_OFFLINE ?= 1

.PHONY: install wordnet test test-fast demo bench lab features clean help

help:  ## list targets
	@grep -E '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

install:  ## create .venv with torch 2.14.1, the package (editable) and its extras, and WordNet 3.0
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,notebooks]'
	$(MAKE) wordnet

wordnet:  ## provide WordNet 3.0 offline (nltk corpus, else Debian's wordnet-base copied into .cache)
	@if ! $(PY) -c "import nltk,sys; nltk.data.find('corpora/wordnet')" 2>/dev/null \
	   && [ ! -e /usr/share/wordnet/data.noun ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q --no-install-recommends wordnet-base wordnet-sense-index \
	   || (apt-get update -q && apt-get install -y -q --no-install-recommends wordnet-base wordnet-sense-index)) >/dev/null; fi
	$(PY) -m clustermine_lib.wordnet

test:  ## unit tests, then the notebooks' outputs with nbval
	$(PY) -m pytest tests
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then $(PY) -m pytest --nbval -p no:cacheprovider notebooks; fi

test-fast:  ## unit tests only
	$(PY) -m pytest tests -x

demo:  ## ClusterMine vs MCM and PosMine on the simulated benchmark (CPU, < 2 min)
	$(PY) -m clustermine_lib.cli demo --seed $(SEED) $(if $(METHODS),--methods $(METHODS))

bench:  ## speed and memory benchmarks, as ratios to this machine's matmul rate
	$(PY) benchmarks/bench.py

lab:  ## open JupyterLab on the notebooks
	$(VENV)/bin/jupyter lab notebooks

features:  ## extract CLIP features: make features MODEL=.. [PRETRAINED=..|CHECKPOINT=..] DATASET=.. DATA_ROOT=.. [NPROC=8]
	$(if $(filter-out 1,$(NPROC)),$(PY) -m torch.distributed.run --standalone --nproc_per_node=$(NPROC),$(PY)) \
	  -m clustermine_lib.features --model $(MODEL) $(if $(PRETRAINED),--pretrained $(PRETRAINED)) \
	  $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) --dataset $(DATASET) --data-root $(DATA_ROOT) \
	  --cache-dir $(CACHE_DIR) --corpus $(CORPUS) --prompts $(PROMPTS) $(FEATURE_ARGS)

clean:  ## remove caches (not the venv)
	rm -rf .cache .pytest_cache
