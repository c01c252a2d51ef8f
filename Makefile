# robaudit — the two commands a fresh clone needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BASE_STAMP := $(VENV)/.installed-base
DEV_STAMP := $(VENV)/.installed-dev
TORCH := torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= out/demo

.PHONY: install install-dev demo test test-fast lint sample-models bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(BASE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(BASE_STAMP)
	$(BIN)/pip install -q $(TORCH) -e '.[dev]'
	touch $@

install: $(BASE_STAMP)          ## runtime install into .venv

install-dev: $(DEV_STAMP)       ## runtime + tests, linters and peer libraries

# The plain model is expected to FAIL the gate (exit 1) and the robust twin to pass it; the
# third scan audits the tabular fraud sample (a CSV with its feature schema).
demo: install
	@$(BIN)/robaudit scan sample_models/digits_cnn.pt --config configs/quick.yaml --out $(DEMO_OUT)/plain; \
	  rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 1 ] || exit $$rc
	@$(BIN)/robaudit scan sample_models/digits_cnn_robust.pt --config configs/quick.yaml --out $(DEMO_OUT); \
	  rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 1 ] || exit $$rc
	@$(BIN)/robaudit scan sample_models/fraud_mlp.pt --config configs/examples/fraud.yaml --out $(DEMO_OUT)/fraud; \
	  rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 1 ] || exit $$rc
	@echo "demo reports: $(DEMO_OUT)/report.html (robust model), $(DEMO_OUT)/plain/report.html (plain model), $(DEMO_OUT)/fraud/report.html (tabular fraud model)"

test: install-dev
	$(BIN)/python -m pytest -q

test-fast: install-dev          ## everything but the peer cross-checks and slow end-to-end runs
	$(BIN)/python -m pytest -q -m "not peer and not slow"

lint: install-dev
	$(BIN)/ruff check robaudit tests benchmarks sample_models
	$(BIN)/mypy

sample-models: install
	$(BIN)/python sample_models/train.py
	$(BIN)/python sample_models/train_fraud.py
	$(BIN)/python sample_models/train_audio.py

bench: install-dev
	$(BIN)/python benchmarks/pgd_throughput.py
	$(BIN)/python benchmarks/autoattack.py

clean:
	rm -rf out .pytest_cache .ruff_cache .mypy_cache
