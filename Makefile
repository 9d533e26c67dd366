# clustermine: `make install`, then `make test` and `make demo`. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY ?= $(VENV)/bin/python
PROFILE ?= demo
SEED ?= 0
# Real-data parameters (PROFILE=paper), the same for `make features` and every notebook; see docs/gpu_workflow.md
# MODEL: registry name, open_clip architecture or a model config .json; CHECKPOINT: a local weights file
MODEL ?= ViT-H-14
PRETRAINED ?=
CHECKPOINT ?=
DEVICE ?= auto
DATASET ?= paper
DATA_ROOT ?= $(HOME)/data
CORPUS ?= wordnet-na
PROMPTS ?= simple-7
NPROC ?= 1
FEATURE_ARGS ?=
CACHE_DIR ?= $(or $(CLUSTERMINE_CACHE),.cache)/features
export HF_HUB_OFFLINE ?= 1
# one MKL code path on every AVX2 CPU, so the demo's numbers do not depend on the CPU vendor (clustermine_lib/__init__.py)
export MKL_CBWR ?= AVX2

.PHONY: install wordnet data test test-fast demo bench lab features clean help

help:  ## list targets
	@grep -E '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

install:  ## create .venv with torch 2.14.1, the package (editable) and its extras, WordNet 3.0 and the simulated benchmark
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,notebooks]'
	$(MAKE) wordnet
	$(MAKE) data

wordnet:  ## provide WordNet 3.0 offline (nltk corpus, else Debian's wordnet-base copied into .cache)
	@if ! $(PY) -c "import nltk,sys; nltk.data.find('corpora/wordnet')" 2>/dev/null \
	   && [ ! -e /usr/share/wordnet/data.noun ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q --no-install-recommends wordnet-base wordnet-sense-index \
	   || (apt-get update -q && apt-get install -y -q --no-install-recommends wordnet-base wordnet-sense-index)) >/dev/null; fi
	$(PY) -m clustermine_lib.wordnet

# nbval: every notebook is executed and each output compared with the committed one (`make notebooks`
# writes them); cells marked NBVAL_IGNORE_OUTPUT (wall times) are executed, not compared.
# NBVAL=--nbval-lax only executes (fails on errors); NBVAL_NOTEBOOKS picks notebooks.
NBVAL ?= --nbval
NBVAL_NOTEBOOKS ?= notebooks
data:  ## build and cache the SIMULATED benchmark and every variant and TEMI clustering the demo notebooks load (~3 min once on 2 cores; the demo's `make features`)
	$(PY) -m clustermine_lib.cli data --seed $(SEED)

test:  ## unit tests, then every notebook executed by nbval and its outputs compared with the committed ones
	$(PY) -m pytest tests
	$(PY) -m pytest $(NBVAL) -p no:cacheprovider $(NBVAL_NOTEBOOKS)

test-fast:  ## unit tests only
	$(PY) -m pytest tests -x

demo:  ## ClusterMine vs MCM and PosMine on the simulated benchmark (CPU, ~30 s)
	$(PY) -m clustermine_lib.cli demo --seed $(SEED) $(if $(METHODS),--methods $(METHODS))

bench:  ## speed and memory benchmarks, as ratios to this machine's matmul rate
	$(PY) benchmarks/bench.py

lab:  ## open JupyterLab on the notebooks (bound to 127.0.0.1; works as root)
	$(VENV)/bin/jupyter lab notebooks --ip=127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root)

features:  ## extract CLIP features: make features MODEL=.. [PRETRAINED=..|CHECKPOINT=..] DATASET=.. DATA_ROOT=.. [NPROC=8]
	$(if $(filter-out 1,$(NPROC)),$(PY) -m torch.distributed.run --standalone --nproc_per_node=$(NPROC),$(PY)) \
	  -m clustermine_lib.features --model $(MODEL_ARG) $(if $(PRETRAINED),--pretrained $(PRETRAINED)) \
	  $(if $(CHECKPOINT),--checkpoint $(abspath $(CHECKPOINT))) --dataset $(DATASET) --data-root $(DATA_ROOT) \
	  --device $(DEVICE) \
	  --cache-dir $(CACHE_DIR) --corpus $(CORPUS_ARG) --prompts $(PROMPTS) $(FEATURE_ARGS)

clean:  ## remove caches (not the venv)
	rm -rf .cache .pytest_cache

# ---------------------------------------------------------------------------------------------------
# Notebooks: one target per table / figure. Targets that share a notebook run it once per make call.
#   make table1                         demo profile (simulated benchmark, CPU)
#   make fig6 PROFILE=paper MODEL=ViT-B-16 PRETRAINED=openai
#   make all PROFILE=paper              every notebook; goes on past failures, then lists them
#   make notebooks                      re-execute notebooks/*.ipynb IN PLACE (demo): what nbval checks
# Parameters set on the command line (or in the environment) are passed to papermill as -p: PROFILE
# MODEL PRETRAINED CHECKPOINT CORPUS PROMPTS C M K TAU SEED DATA_ROOT CACHE_DIR OUTPUT_DIR DEVICE MAX_EVAL
# PROGRESS; anything else
# with NB_ARGS (papermill options), e.g. NB_ARGS='-y "k_values: [1000, 40000]"'. A name the notebook does
# not declare is an error.
# The executed copy goes to [OUTPUT_DIR/]results/$(PROFILE)/notebooks/<run>/ (the committed notebooks stay as they are).
# ---------------------------------------------------------------------------------------------------
NOTEBOOK_TABLE := \
  quickstart:00_quickstart \
  table1:01_table1_main_results \
  table2:02_covariate_shift_table2_table9_fig4 \
  table9:02_covariate_shift_table2_table9_fig4 \
  fig4:02_covariate_shift_table2_table9_fig4 \
  table3:03_corpora_table3 \
  table4:04_equal_size_positives_table4 \
  table5:05_openood_vit_b_table5 \
  fig6:06_sensitivity_fig6 \
  fig3:07_model_scaling_fig3 \
  fig5:08_label_quality_fig5 \
  table6:09_text_preprocessing_table6 \
  table7:10_extra_ood_table7 \
  fig7:11_cluster_analysis_fig7 \
  fig8:12_prompts_fig8 \
  fig9:13_negative_mining_fig9_fig10_fig11 \
  fig10:13_negative_mining_fig9_fig10_fig11 \
  fig11:13_negative_mining_fig9_fig10_fig11 \
  table8:14_plp_table8
ARTIFACTS := $(foreach p,$(NOTEBOOK_TABLE),$(firstword $(subst :, ,$(p))))
NOTEBOOKS := $(sort $(foreach p,$(NOTEBOOK_TABLE),$(lastword $(subst :, ,$(p)))))
# The executed copy goes to [OUTPUT_DIR/]results/<profile>/notebooks/<run>/, <run> naming the parameters set on the command
# line (e.g. MODEL-ViT-B-16.PRETRAINED-openai.C-2000; "default" when none), so runs never overwrite each other.
space := $(subst ,, )
_slug_value = $(if $(wildcard $(1)),$(notdir $(1)),$(subst /,_,$(1)))
NB_RUN_VARS := MODEL PRETRAINED CHECKPOINT CORPUS PROMPTS C M K TAU SEED MAX_EVAL
NB_RUN = $(or $(subst $(space),.,$(strip $(foreach v,$(NB_RUN_VARS),$(if $(call _set,$(v)),$(v)-$(call _slug_value,$($(v))))))),default)$(if $(NB_ARGS),.args-$(shell printf '%s' "$(NB_ARGS)" | md5sum | cut -c1-8))
NB_ROOT = $(if $(call _set,OUTPUT_DIR),$(abspath $(OUTPUT_DIR))/)
NB_OUT = $(NB_ROOT)results/$(PROFILE)/notebooks/$(NB_RUN)
PAPERMILL := $(VENV)/bin/papermill
NB_KERNEL := python3
# make variable -> notebook parameter (passed only when set on the command line or in the environment)
NB_VARS := PRETRAINED:pretrained PROMPTS:prompts C:C M:M K:K TAU:tau SEED:seed \
  DEVICE:device MAX_EVAL:max_eval PROGRESS:progress
NB_PATH_VARS := CHECKPOINT:checkpoint DATA_ROOT:data_root CACHE_DIR:cache_dir OUTPUT_DIR:output_dir
# a model config file and a corpus file are passed as absolute paths (papermill runs the notebooks in notebooks/)
MODEL_ARG = $(if $(wildcard $(MODEL)),$(abspath $(MODEL)),$(MODEL))
CORPUS_ARG = $(if $(wildcard $(CORPUS)),$(abspath $(CORPUS)),$(CORPUS))
_set = $(filter command line environment environment override,$(origin $(1)))
NB_PARAMS = -p profile $(PROFILE) $(if $(call _set,MODEL),-p model '$(MODEL_ARG)') \
  $(if $(call _set,CORPUS),-p corpus '$(CORPUS_ARG)') \
  $(foreach p,$(NB_VARS),$(if $(call _set,$(firstword $(subst :, ,$(p)))),-p $(lastword $(subst :, ,$(p))) '$($(firstword $(subst :, ,$(p))))')) \
  $(foreach p,$(NB_PATH_VARS),$(if $(call _set,$(firstword $(subst :, ,$(p)))),-p $(lastword $(subst :, ,$(p))) '$(abspath $($(firstword $(subst :, ,$(p)))))')) \
  $(NB_ARGS)

.PHONY: all notebooks $(ARTIFACTS) FORCE
$(foreach p,$(NOTEBOOK_TABLE),$(eval $(firstword $(subst :, ,$(p))): $(NB_OUT)/$(lastword $(subst :, ,$(p))).ipynb))
$(ARTIFACTS): ; @:
table1:  ## run an artifact's notebook: make table1..table9 | fig3..fig11 | quickstart [PROFILE=paper MODEL=..]

$(NB_OUT)/%.ipynb: notebooks/%.ipynb FORCE
	@mkdir -p $(@D)
	$(PAPERMILL) --kernel $(NB_KERNEL) --cwd notebooks --log-output $< $@ $(NB_PARAMS)
	@echo "executed notebook: $@; results and figures: $(NB_ROOT)results/$(PROFILE)/<model>/<run>/, $(NB_ROOT)figures/$(PROFILE)/<model>/<run>/ (the notebook prints them)"
FORCE:

all:  ## run every notebook (PROFILE=demo|paper); goes on past a failing one and summarises at the end
	@mkdir -p $(NB_OUT)/logs; failed=""; \
	for nb in $(NOTEBOOKS); do \
	  printf '%-45s ' "$$nb"; start=$$(date +%s); \
	  if $(MAKE) --no-print-directory $(NB_OUT)/$$nb.ipynb > $(NB_OUT)/logs/$$nb.log 2>&1; \
	  then echo "ok ($$(( $$(date +%s) - start )) s)"; \
	  else echo "FAILED ($$(( $$(date +%s) - start )) s), log: $(NB_OUT)/logs/$$nb.log"; failed="$$failed $$nb"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo; echo "FAILED notebooks (PROFILE=$(PROFILE)):"; \
	  for nb in $$failed; do echo "  $$nb  ->  log: $(NB_OUT)/logs/$$nb.log"; done; exit 1; \
	else echo "all notebooks ran (PROFILE=$(PROFILE)); executed copies in $(NB_OUT)/"; fi

notebooks:  ## re-execute notebooks/*.ipynb in place with the demo profile (the outputs nbval checks)
	@for nb in $(NOTEBOOKS); do \
	  echo "executing notebooks/$$nb.ipynb (demo)"; start=$$(date +%s); \
	  $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.kernel_name=$(NB_KERNEL) --ExecutePreprocessor.timeout=1800 \
	    --ExecutePreprocessor.record_timing=False notebooks/$$nb.ipynb || exit 1; \
	  echo "  $$(( $$(date +%s) - start )) s"; \
	done
