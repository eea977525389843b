"""The other route to the floor: ``torch.compile`` of the torch path, against the C++ kernel and a plain copy.

Inductor fuses the torch path's elementwise ops into one generated C++/OpenMP loop, so it too can approach
a copy of q and k. It pays a compile (seconds, reported) per new shape/dtype/layout, recompiles or goes
dynamic when the sequence length changes (every decode step), and breaks graphs that call extension ops.
The C++ kernel needs one build per machine. Shapes: q and k ``[1, 32, 4096, 128]``, half layout, full
rotary, float32 and bfloat16 (reported, no target: the claim is that of rotary_speed.py).
"""

from __future__ import annotations

import os
import time

import torch

from common import Row, best_ratio, cli, measure, median_ms, ratio, row
from ropelab import Rope, apply_rotary

SUITE = True
REPEATS = int(os.environ.get("BENCH_REPEATS", "9"))
CLAIM = "torch.compile of the torch path (time ratio)"


def run(dtype: torch.dtype) -> list[Row]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 32, 4096, 128, generator=g).to(dtype)
    k = torch.randn(1, 32, 4096, 128, generator=g).to(dtype)
    cos, sin = Rope("default", head_dim=128).cos_sin(torch.arange(4096), dtype=dtype)

    def torch_path(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        return apply_rotary(q, k, cos, sin, backend="torch")

    compiled = torch.compile(torch_path, dynamic=False)
    start = time.perf_counter()
    out_q, out_k = compiled(q, k, cos, sin)
    compile_s = time.perf_counter() - start
    ref_q, ref_k = apply_rotary(q, k, cos, sin, backend="torch")
    exact = torch.equal(out_q, ref_q) and torch.equal(out_k, ref_k)
    del out_q, out_k, ref_q, ref_k
    times = measure(
        {
            "compiled": lambda: compiled(q, k, cos, sin),
            "kernel": lambda: apply_rotary(q, k, cos, sin, backend="cpp"),
            "clone": lambda: (q.clone(), k.clone()),
        },
        repeats=REPEATS,
    )
    name = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    shapes = f"q, k {list(q.shape)} half"
    ms = " ".join(f"{v}={median_ms(times, v):.1f}" for v in times)
    detail = (
        f"first call {compile_s:.0f} s (the compile; less when inductor's on-disk cache is warm); "
        f"bit-identical to the torch path: {exact}; ms: {ms}"
    )
    return [
        row(
            CLAIM,
            f"{name} compiled / clone",
            ratio(times, "compiled", "clone"),
            None,
            shapes,
            detail,
            best=best_ratio(times, "compiled", "clone"),
        ),
        row(
            CLAIM,
            f"{name} compiled / C++ kernel",
            ratio(times, "compiled", "kernel"),
            None,
            shapes,
            best=best_ratio(times, "compiled", "kernel"),
        ),
        row(
            CLAIM,
            f"{name} C++ kernel / clone",
            ratio(times, "kernel", "clone"),
            None,
            shapes,
            best=best_ratio(times, "kernel", "clone"),
        ),
    ]


def main() -> list[Row]:
    return run(torch.float32) + run(torch.bfloat16)


if __name__ == "__main__":
    cli(main)
