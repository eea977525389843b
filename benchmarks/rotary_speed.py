"""Rotation at the memory-bound floor: ropelab's fused C++ kernel vs transformers and vs a plain copy.

Claims, on this CPU, float32 and bfloat16, q ``[1, 32, 4096, 128]`` with k ``[1, 32, ...]`` (MHA) or
``[1, 8, ...]`` (GQA), both layouts, full and partial (0.5) rotary:

* ``apply_rotary`` (``backend="cpp"``, what ``"auto"`` picks here) is at least 2x faster than transformers'
  ``apply_rotary_pos_emb`` given the full-width cos/sin transformers builds (LLaMA's for the half layout,
  GPT-NeoX's for partial rotary, GPT-J's for the interleaved layout, with its slice-and-cat for partial);
* it takes at most 1.5x the time of the floor, a plain copy of the same q and k: out of place
  (``apply_rotary``) against ``q.clone(); k.clone()`` (both allocate their outputs), in place
  (``apply_rotary_``) against ``copy_`` into preallocated tensors.

The kernel rounds as the torch path and transformers do (each product in bf16); ``upcast=True`` (float32
arithmetic from float32 tables, one rounding: fewer instructions, no longer transformers' bits) is reported
beside it for bf16.

The half layout runs on ``[b, h, s, d]`` (as LLaMA in transformers), the interleaved layout on
``[b, s, h, d]`` (as GPT-J); the kernel's outputs are checked to equal transformers' bit for bit before
timing. The torch path (``backend="torch"``) is reported too: plain torch ops, no ``rotate_half`` copy.
"""

from __future__ import annotations

import itertools
import os

import torch
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb as neox_apply
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_apply
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_apply

from common import Row, best_ratio, cli, measure, median_ms, ratio, row
from ropelab import Rope, apply_rotary, apply_rotary_
from ropelab.kernels import cpu_kernel, cpu_kernel_error
from ropelab.rope.apply import _kernel_backend

SUITE = True
REPEATS = int(os.environ.get("BENCH_REPEATS", "11"))
B, HQ, S, D = 1, 32, 4096, 128

CLAIM_HF = "kernel vs transformers (speedup)"
CLAIM_FLOOR = "kernel vs plain copy of q, k (time ratio)"
CLAIM_UPCAST = "bf16 kernel with upcast=True (float32 arithmetic, one rounding) vs copy"
CLAIM_TORCH = "torch path (plain ops), for reference"


def transformers_rotation(layout: str, r: int, cos_half: torch.Tensor, sin_half: torch.Tensor):
    """transformers' rotation for this layout and rotary dim, with its tables built as transformers does."""
    if layout == "interleaved":  # GPT-J: [b, s, h, d]; sin/cos [b, s, r/2], repeat_interleave inside

        def gptj(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            sin, cos = sin_half[None], cos_half[None]
            if r == q.shape[-1]:
                return gptj_apply(q, sin, cos), gptj_apply(k, sin, cos)
            q_rot = gptj_apply(q[..., :r], sin, cos)
            k_rot = gptj_apply(k[..., :r], sin, cos)
            return torch.cat([q_rot, q[..., r:]], dim=-1), torch.cat([k_rot, k[..., r:]], dim=-1)

        return gptj
    cos_full = torch.cat((cos_half, cos_half), dim=-1)[None]  # [1, s, r] in the model dtype
    sin_full = torch.cat((sin_half, sin_half), dim=-1)[None]
    apply = llama_apply if r == D else neox_apply  # NeoX slices q[..., :r] and concatenates the rest
    return lambda q, k: apply(q, k, cos_full, sin_full)


def run_config(dtype: torch.dtype, layout: str, hk: int, partial: float) -> list[Row]:
    heads_dim = 1 if layout == "half" else 2
    shape = (lambda h: (B, h, S, D)) if heads_dim == 1 else (lambda h: (B, S, h, D))
    g = torch.Generator().manual_seed(0)
    q = torch.randn(shape(HQ), generator=g).to(dtype)
    k = torch.randn(shape(hk), generator=g).to(dtype)
    rope = Rope("default", head_dim=D, base=10000.0, partial_rotary_factor=partial)
    r = rope.rotary_dim
    cos, sin = rope.cos_sin(torch.arange(S), dtype=dtype)  # half tables [s, r/2]
    hf = transformers_rotation(layout, r, cos, sin)
    kw = {"layout": layout, "heads_dim": heads_dim}
    q_work, k_work = q.clone(), k.clone()
    q_buf, k_buf = torch.empty_like(q), torch.empty_like(k)

    assert _kernel_backend("auto", q, cos, sin, inplace=False) == "cpp"
    ref_q, ref_k = hf(q, k)
    out_q, out_k = apply_rotary(q, k, cos, sin, backend="cpp", **kw)
    assert torch.equal(out_q, ref_q) and torch.equal(out_k, ref_k), "kernel != transformers"
    del ref_q, ref_k, out_q, out_k

    variants = {
        "transformers": lambda: hf(q, k),
        "torch": lambda: apply_rotary(q, k, cos, sin, backend="torch", **kw),
        "kernel": lambda: apply_rotary(q, k, cos, sin, backend="cpp", **kw),
        "kernel_": lambda: apply_rotary_(q_work, k_work, cos, sin, backend="cpp", **kw),
        "clone": lambda: (q.clone(), k.clone()),
        "copy_": lambda: (q_buf.copy_(q), k_buf.copy_(k)),
    }
    upcast = dtype != torch.float32
    if upcast:  # float32 tables, as the upcast mode reads them
        cos32, sin32 = rope.cos_sin(torch.arange(S))
        variants["kernel_up"] = lambda: apply_rotary(q, k, cos32, sin32, backend="cpp", upcast=True, **kw)
        variants["kernel_up_"] = lambda: apply_rotary_(
            q_work, k_work, cos32, sin32, backend="cpp", upcast=True, **kw
        )
    times = measure(variants, repeats=REPEATS)
    name = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    config = f"{name} {layout} {'GQA' if hk != HQ else 'MHA'} r={r}"
    shapes = f"q {list(q.shape)}, k {list(k.shape)}, cos/sin [{S}, {r // 2}]"
    ms = " ".join(f"{v}={median_ms(times, v):.1f}" for v in times)

    def pair(claim: str, label: str, num: str, den: str, target: str | None, detail: str = "") -> Row:
        value, best = ratio(times, num, den), best_ratio(times, num, den)
        return row(claim, f"{config}{label}", value, target, shapes, detail, best=best)

    rows = [
        pair(CLAIM_HF, "", "transformers", "kernel", ">= 2", f"ms: {ms}"),
        pair(CLAIM_FLOOR, " out-of-place / clone", "kernel", "clone", "<= 1.5"),
        pair(CLAIM_FLOOR, " in-place / copy_", "kernel_", "copy_", "<= 1.5"),
        pair(CLAIM_TORCH, " speedup vs transformers", "transformers", "torch", None),
        pair(CLAIM_TORCH, " time / clone", "torch", "clone", None),
    ]
    if upcast:
        rows.append(pair(CLAIM_UPCAST, " out-of-place / clone", "kernel_up", "clone", "<= 1.5"))
        rows.append(pair(CLAIM_UPCAST, " in-place / copy_", "kernel_up_", "copy_", "<= 1.5"))
    return rows


def main() -> list[Row]:
    if cpu_kernel() is None:
        raise SystemExit(f"the C++ kernel is unavailable: {cpu_kernel_error()}")
    rows: list[Row] = []
    for dtype, layout, hk, partial in itertools.product(
        (torch.float32, torch.bfloat16), ("half", "interleaved"), (HQ, 8), (1.0, 0.5)
    ):
        rows += run_config(dtype, layout, hk, partial)
    return rows


if __name__ == "__main__":
    cli(main)
