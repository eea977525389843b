#!/usr/bin/env bash
# benchmarks/smollm2_context.sh: which method lets SmolLM2 (trained to 8192 tokens) *use* 16k and 32k
# tokens of context (issue 13, "the measurement this unlocks").
#
# The same last 256 tokens of each document given 4k / 8k / 16k / 32k tokens before them (`--score-last`),
# on two kinds of text: Python code (`stdlib`: the first two files with 32k + 256 tokens, _pydecimal.py and
# turtle.py) and English prose (`pydoc`: the Python reference manual, two documents of about 50k tokens).
# A method uses the longer context when its loss at 16k and 32k falls below the unmodified model's own
# loss at 8k (the best it can do inside its trained window).
#
#   bash benchmarks/smollm2_context.sh [OUT]      # default OUT: runs/smollm2-context
#   DOCS=1 THREADS=1 bash benchmarks/smollm2_context.sh OUT   # the first document of each corpus only
#   MODEL=FILE.gguf DOCS=4 EVAL_FLAGS="--device cuda --dtype bf16" bash benchmarks/smollm2_context.sh OUT
#                                                            # (what `benchmarks/gpu.sh tables` runs)
#
# Resumable: each (method, document) unit is appended when done; rerun the same command after an
# interruption. Cost on the 2-core CPU of this project: about 18 CPU-minutes per unit with one thread
# (a 32k forward is ~13 of them), 8 methods x 2 documents x 2 corpora = 32 units: ~10 hours alone; on one
# GPU, minutes. `ropelab report OUT/code OUT/english` prints the tables again from the rows.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/smollm2-context}
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
METHODS="none,ntk(factor=4),yarn(factor=4),dynamic,self-extend(group=4,window=1024),self-extend(group=8,window=2048),rerope+log-n,leaky-rerope"
for corpus in stdlib pydoc; do
    name=$([ "$corpus" = stdlib ] && echo code || echo english)
    start=$SECONDS
    # shellcheck disable=SC2086  # EVAL_FLAGS: several flags, split on purpose
    "$PY" -m ropelab eval --model "${MODEL:-smollm2}" --corpus "$corpus" --docs "${DOCS:-2}" --score-last 256 \
        --lengths 4k,8k,16k,32k --method "$METHODS" --baseline none ${THREADS:+--threads "$THREADS"} \
        ${EVAL_FLAGS:-} --out "$OUT/$name"
    echo "smollm2_context.sh: $corpus done in $((SECONDS - start)) s (this call)"
done
