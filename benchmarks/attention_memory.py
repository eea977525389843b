"""Peak memory and time of ALiBi, ReRoPE and Self-Extend: blockwise engine vs the materialised version.

Claim: the blockwise engine (``ropelab.attention``) never holds a float ``[h, L, L]`` tensor, so its peak
memory grows with ``block * L`` instead of ``L^2``. Each variant runs in a fresh subprocess; peak memory is
the RSS high-water mark (``resource.getrusage``) above the RSS after the inputs were built and a small
warm-up call ran, so it counts only what the attention call itself allocates. The materialised versions:
ALiBi with the full bias ``[h, L, L]`` as SDPA's ``attn_mask`` (the usual way), ReRoPE and Self-Extend
with the same code as one block of all queries (two full score matrices merged, as in the reference
implementations). Ratios are measured in the same run.

    .venv/bin/python benchmarks/attention_memory.py                 # L = 8192, 8 heads, head_dim 64
    .venv/bin/python benchmarks/attention_memory.py --quick         # L = 1024, blocks of 128
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = ("alibi", "rerope", "self-extend")
MODES = ("blockwise", "materialised")


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(
    variant: str, mode: str, length: int, heads: int, kv_heads: int, head_dim: int, block: int | None
) -> dict:
    """Run one variant once in this (fresh) process; return peak memory above baseline and time."""
    import torch

    from ropelab.attention import alibi_attention, alibi_slopes, rerope_attention, self_extend_attention
    from ropelab.attention.reference import alibi_attention_materialised
    from ropelab.rope import Rope

    rope = Rope("default", head_dim=head_dim)
    window, group, se_window = 512, 4, 1024

    def run(n: int):
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, heads, n, head_dim, generator=g)
        k = torch.randn(1, kv_heads, n, head_dim, generator=g)
        v = torch.randn(1, kv_heads, n, head_dim, generator=g)
        pos = torch.arange(n)
        block_size = n if mode == "materialised" else block
        if variant == "alibi":
            if mode == "materialised":
                return lambda: alibi_attention_materialised(q, k, v, pos, pos, alibi_slopes(heads))
            return lambda: alibi_attention(q, k, v, pos, pos, block_size=block_size)
        if variant == "rerope":
            return lambda: rerope_attention(q, k, v, pos, pos, rope, window=window, block_size=block_size)
        return lambda: self_extend_attention(
            q, k, v, pos, pos, rope, group=group, window=se_window, block_size=block_size
        )

    with torch.inference_mode():
        run(256)()  # warm-up: thread pools, kernels
        call = run(length)
        base = rss_peak_mib()
        start = time.perf_counter()
        out = call()
        seconds = time.perf_counter() - start
        peak = rss_peak_mib()
    assert bool(torch.isfinite(out).all())
    return {"variant": variant, "mode": mode, "extra_mib": peak - base, "seconds": seconds, "base_mib": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=None, help="default: --heads (no GQA)")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=None, help="queries per block (default: automatic)")
    parser.add_argument("--quick", action="store_true", help="L = 1024, blocks of 128 queries")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    length = 1024 if args.quick else args.length
    if args.quick and args.block_size is None:
        args.block_size = 128
    kv_heads = args.kv_heads or args.heads
    if args.child:
        result = child(*args.child, length, args.heads, kv_heads, args.head_dim, args.block_size)
        print(json.dumps(result))
        return

    from ropelab.attention import auto_block_size

    block = args.block_size or auto_block_size(1, args.heads, length, length)
    full_mib = args.heads * length * length * 4 / 2**20
    print(
        f"L={length}  heads={args.heads}  kv_heads={kv_heads}  head_dim={args.head_dim}  "
        f"block={block} queries  (one float32 [h, L, L] tensor = {full_mib:.0f} MiB)"
    )
    header = ("variant", "blockwise MiB", "materialised MiB", "ratio", "blockwise s", "materialised s")
    print("{:<12} {:>14} {:>17} {:>7} {:>12} {:>15}".format(*header))
    for variant in args.variants.split(","):
        rows = {}
        for mode in MODES:
            command = [sys.executable, __file__, "--child", variant, mode, "--length", str(length)]
            command += [
                "--heads",
                str(args.heads),
                "--kv-heads",
                str(kv_heads),
                "--head-dim",
                str(args.head_dim),
            ]
            if args.block_size:
                command += ["--block-size", str(args.block_size)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        b, m = rows["blockwise"], rows["materialised"]
        ratio = m["extra_mib"] / max(b["extra_mib"], 1e-9)
        print(
            f"{variant:<12} {b['extra_mib']:>14.0f} {m['extra_mib']:>17.0f} {ratio:>6.1f}x "
            f"{b['seconds']:>12.2f} {m['seconds']:>15.2f}"
        )


if __name__ == "__main__":
    main()
