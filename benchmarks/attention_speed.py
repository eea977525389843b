"""Self-Extend and ReRoPE at the cost of native attention: a SmolLM2 forward <= 1.5x the native-RoPE one.

ReRoPE, leaky ReRoPE and Self-Extend run as two fused causal attentions (the neighbour band with normal
positions, the far keys with capped / grouped positions) merged exactly by their log-sum-exp
(:mod:`ropelab.attention.merged`); before, they ran through the blockwise engine (per query block:
two score matrices, a ``where``, a softmax), about 4x the native forward at 16k.

Three measurements, each a ratio of variants interleaved in one run (:func:`common.measure`):

* model: a SmolLM2 forward (float32, ``use_cache=False``) over ``--length`` tokens (default 16384; a
  fixed random token sequence, timing only) with native RoPE (``none``), ``self-extend`` and ``rerope``
  at the model's default windows, and ``dynamic`` (frequencies of the current length, applied inside
  ropelab's attention function) (``--trials`` rounds, default 2, after one warm-up round at 1024).
  Target: each method <= 1.5x native.
* attention alone: ``self_extend_attention`` on SmolLM2-shaped tensors (9 heads, 3 KV heads, head_dim 64)
  at ``--micro-lengths``: the merged path against the old blockwise engine (``block_size`` given) and
  against native RoPE attention (``rope_attention``, SDPA); reported.
* peak memory: each attention call once in a fresh subprocess; the RSS high-water mark above the RSS
  before the call (``resource.getrusage``), against the size of one float32 ``[h, L, L]`` tensor.
  Target: the merged path's extra memory < 1/4 of ``[h, L, L]`` (it holds none; at 16k it is 9.4 GiB).

    .venv/bin/python benchmarks/attention_speed.py                    # 16k model forward (~20 min, 2 cores)
    .venv/bin/python benchmarks/attention_speed.py --length 4096 --micro-lengths 4096
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch

from common import Row, best_ratio, measure, median_ms, print_rows, ratio, row

SUITE = True
HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64  # SmolLM2-135M
TARGET = "<= 1.5"
MEMORY_TARGET = "<= 0.25"
METHODS = ("self-extend", "rerope")
#: frequency methods that run through ropelab's attention function (hf/attention.py) rather than
#: transformers' rotary module: its plain-causal prefill must cost what native attention costs
ROUTE_METHODS = ("dynamic",)


def tensors(length: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, HEADS, length, HEAD_DIM, generator=g)
    k = torch.randn(1, KV_HEADS, length, HEAD_DIM, generator=g)
    v = torch.randn(1, KV_HEADS, length, HEAD_DIM, generator=g)
    return q, k, v, torch.arange(length)


def attention_call(variant: str, length: int):
    """A zero-argument call of one attention variant on SmolLM2-shaped tensors at ``length``."""
    from ropelab.attention import auto_block_size, rope_attention, self_extend_attention
    from ropelab.rope import Rope

    rope = Rope("default", head_dim=HEAD_DIM, base=100000.0)
    q, k, v, pos = tensors(length)
    group, window = 4, 2048
    if variant == "native":
        return lambda: rope_attention(q, k, v, pos, pos, rope)
    block = auto_block_size(1, HEADS, length, length) if variant == "blockwise" else None
    return lambda: self_extend_attention(
        q, k, v, pos, pos, rope, group=group, window=window, block_size=block
    )


def micro_rows(lengths: list[int], trials: int) -> list[Row]:
    rows = []
    for length in lengths:
        with torch.inference_mode():
            calls = {name: attention_call(name, length) for name in ("native", "merged", "blockwise")}
            times = measure(calls, repeats=trials, warmup=1)
        ms = " ".join(f"{n}={median_ms(times, n):.0f}" for n in times)
        shapes = f"q [1, {HEADS}, {length}, {HEAD_DIM}], k/v [1, {KV_HEADS}, {length}, {HEAD_DIM}], fp32"
        detail = f"self-extend(group=4, window=2048); {trials} trials; ms: {ms}"
        rows.append(
            row(
                "attention alone: Self-Extend merged / native RoPE attention",
                f"L={length} merged / native",
                ratio(times, "merged", "native"),
                None,
                shapes,
                detail,
                best_ratio(times, "merged", "native"),
            )
        )
        rows.append(
            row(
                "attention alone: old blockwise engine / merged (speed-up)",
                f"L={length} blockwise / merged",
                ratio(times, "blockwise", "merged"),
                None,
                shapes,
                detail,
                best_ratio(times, "blockwise", "merged"),
            )
        )
    return rows


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def memory_child(variant: str, length: int) -> dict:
    """One call in this (fresh) process: peak RSS above the RSS after the inputs and a warm-up."""
    with torch.inference_mode():
        attention_call(variant, 512)()  # thread pools, kernels
        call = attention_call(variant, length)
        base = rss_mib()
        out = call()
        peak = rss_mib()
    assert bool(torch.isfinite(out).all())
    return {"variant": variant, "extra_mib": peak - base}


def memory_rows(lengths: list[int]) -> list[Row]:
    rows = []
    for length in lengths:
        full_mib = HEADS * length * length * 4 / 2**20
        extra = {}
        for variant in ("native", "merged"):
            command = [sys.executable, __file__, "--memory-child", variant, str(length)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            extra[variant] = json.loads(done.stdout.strip().splitlines()[-1])["extra_mib"]
        rows.append(
            row(
                "peak memory of the merged attention / one float32 [h, L, L] tensor",
                f"L={length} merged extra RSS / [h, L, L]",
                extra["merged"] / full_mib,
                MEMORY_TARGET,
                f"{HEADS} heads, fp32; [h, L, L] = {full_mib:.0f} MiB",
                f"extra RSS: merged {extra['merged']:.0f} MiB, native SDPA {extra['native']:.0f} MiB "
                f"(one call each, fresh process)",
            )
        )
    return rows


def model_rows(length: int, trials: int, clock: str = "wall") -> list[Row]:
    from ropelab.hf.extend import extend, make_extension
    from ropelab.hf.load import load_model

    model, _ = load_model("smollm2")
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))

    def forward(method: str, tokens: torch.Tensor):
        def call():
            extend(model, method)
            with torch.inference_mode():
                logits = model(input_ids=tokens, use_cache=False).logits[:, -1]
            extend(model, "none")
            return logits

        return call

    names = ("none", *METHODS, *ROUTE_METHODS)
    measure({m: forward(m, ids[:, :1024]) for m in names}, repeats=1, warmup=0)  # warm-up round
    times = measure({m: forward(m, ids) for m in names}, repeats=trials, warmup=0, clock=clock)
    ms = " ".join(f"{n}={median_ms(times, n):.0f}" for n in times)
    threads = torch.get_num_threads()
    timed = f"{threads} thread{'s' if threads > 1 else ''}, {'CPU' if clock == 'cpu' else 'wall'} time"
    rows = []
    for method in (*METHODS, *ROUTE_METHODS):
        resolved = make_extension(model.config, method).resolved()
        title = (
            "SmolLM2 forward: attention-level method / native RoPE (time ratio)"
            if method in METHODS
            else "SmolLM2 forward: frequency method in ropelab's attention route / native RoPE (time ratio)"
        )
        rows.append(
            row(
                title,
                f"L={length} {method} / none",
                ratio(times, method, "none"),
                TARGET,
                f"SmolLM2-135M, 1 x {length} tokens, fp32, {timed}",
                f"{method} {resolved}; {trials} trials; {clock} ms: {ms}",
                best_ratio(times, method, "none"),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=int(os.environ.get("BENCH_ATTN_LENGTH", "16384")))
    parser.add_argument("--trials", type=int, default=int(os.environ.get("BENCH_REPEATS", "2")))
    parser.add_argument("--micro-lengths", default="4096,16384", help="comma-separated lengths, '' for none")
    parser.add_argument("--micro-trials", type=int, default=3)
    parser.add_argument("--no-model", action="store_true", help="only the attention-alone rows")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="model forwards timed by wall time or by the process's CPU time (steadier on a shared machine "
        "with --threads 1)",
    )
    parser.add_argument("--json", help="write the rows to this file instead of printing them")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child[0], int(args.memory_child[1]))))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    micro = [int(x) for x in args.micro_lengths.split(",") if x]
    rows = micro_rows(micro, args.micro_trials) + memory_rows(micro)
    if not args.no_model:
        rows += model_rows(args.length, args.trials, args.clock)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f)
    else:
        print_rows(rows)


if __name__ == "__main__":
    main()
