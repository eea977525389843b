#!/usr/bin/env bash
# PoSE in the lab (docs/finetune.md, "PoSE"): the committed RoPE lab model (T = 128) fine-tuned for a
# 512-token target with PI and YaRN, 3 seeds each, 200 steps of 4 windows:
#   direct512      at 512 directly (4 x 512 tokens a step)
#   pose128to512   PoSE: 128-token windows whose position ids skip toward 512 (4 x 128 tokens a step)
#   short128to512  the control: 128-token windows, the method set for 512, no skips (--pose-chunks 1)
#   pose128to512x400steps  PoSE for 400 steps (half the tokens of direct512's 200)
#   poseskip128to512  PoSE with the text skipped with the ids (--pose-text skipped)
# Usage: [SEEDS="0 1 2"] benchmarks/pose_lab.sh OUT [MODE...]   then: python benchmarks/pose_lab.py OUT docs/pose
set -euo pipefail
out=${1:-out/pose-lab}
shift || true
modes=("${@:-direct512 pose128to512 short128to512 pose128to512x400steps poseskip128to512}")
read -r -a modes <<< "${modes[*]}"
common=(--model lab --steps 200 --batch-size 4 --lr 5e-4 --warmup 10 --schedule constant
        --eval-every 25 --eval-windows 16 --save-every 100 --threads 1 --quiet)
declare -A flags=(
  [direct512]="--length 512"
  [pose128to512]="--length 128 --pose 512"
  [short128to512]="--length 128 --pose 512 --pose-chunks 1"
  [pose128to512x400steps]="--length 128 --pose 512 --steps 400"
  [poseskip128to512]="--length 128 --pose 512 --pose-text skipped"
)
for seed in ${SEEDS:-0 1 2}; do
  for method in pi yarn; do
    for mode in "${modes[@]}"; do
      # shellcheck disable=SC2086
      python -m ropelab finetune "${common[@]}" --method "$method" --seed "$seed" ${flags[$mode]} \
        --out "$out/$method-$mode-s$seed"
    done
  done
done
