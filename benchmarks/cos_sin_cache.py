"""cos/sin computed once: ``Rope.cos_sin`` from its growing table cache vs computing the angles every call.

A model calls ``cos_sin`` for every forward (ropelab's attention function: once per layer per forward).
Uncached (``cache=False``), each call computes float64 angles and their cos/sin for every position; cached,
the first call builds the table for positions 0..n-1 and later calls gather rows from it. Ratios are
uncached time / cached time for the same call (target: at least 2x for a prefill-sized call). Reported too:
a decode step (one position; requests of up to 32 positions skip the table, so this shows only that the cache
costs a step nothing), and growing the table by 64 rows against rebuilding it.
Shapes: YaRN, head_dim 128, bfloat16 tables ``[L, 64]``.
"""

from __future__ import annotations

import os

import torch

from common import Row, Times, best_ratio, cli, measure, median_ms, ratio, row
from ropelab import Rope

SUITE = True
REPEATS = int(os.environ.get("BENCH_REPEATS", "9"))
CLAIM = "cos/sin cache: uncached / cached time"


def pair_row(
    times: Times, config: str, num: str, den: str, target: str | None, shapes: str, detail: str = ""
) -> Row:
    return row(
        CLAIM, config, ratio(times, num, den), target, shapes, detail, best=best_ratio(times, num, den)
    )


def run_length(length: int) -> list[Row]:
    rope = Rope("yarn", head_dim=128, base=10000.0, factor=8.0, original_max_position_embeddings=4096)
    prefill = torch.arange(length)
    step = torch.tensor([length - 1])
    kw = {"dtype": torch.bfloat16}
    rope.cos_sin(prefill, **kw)  # builds the table
    cached, fresh = rope.cos_sin(prefill, **kw), rope.cos_sin(prefill, cache=False, **kw)
    assert all(torch.equal(a, b) for a, b in zip(cached, fresh, strict=True))
    times = measure(
        {
            "prefill_cached": lambda: rope.cos_sin(prefill, **kw),
            "prefill_uncached": lambda: rope.cos_sin(prefill, cache=False, **kw),
        },
        repeats=REPEATS,
    )
    shapes = f"positions [{length}] -> cos/sin [{length}, 64] bf16"
    ms = " ".join(f"{v}={median_ms(times, v):.3f}" for v in times)
    rows = [pair_row(times, f"prefill L={length}", "prefill_uncached", "prefill_cached", ">= 2", shapes, ms)]

    # a decode step (one position: computed directly either way), timed apart from the large calls, whose
    # memory traffic would otherwise dominate a 0.1 ms call; 100 calls per sample
    def steps(cache: bool) -> object:
        for _ in range(100):
            rope.cos_sin(step, cache=cache, **kw)
        return None

    times = measure(
        {"step_cached": lambda: steps(True), "step_uncached": lambda: steps(False)}, repeats=REPEATS
    )
    ms = " ".join(f"{v}={median_ms(times, v) / 100:.3f}" for v in times)
    rows.append(
        pair_row(
            times, f"decode step at L={length}", "step_uncached", "step_cached", None, "positions [1]", ms
        )
    )
    # growth: extending the table by a 64-position chunk (computes only those rows) vs building it anew
    rope._tables.slack = 0  # grow by exactly the request
    grow = {"n": max(rope._tables.rows(key) for key in rope._tables._entries)}

    def extend() -> object:
        grow["n"] += 64
        return rope.cos_sin(torch.arange(grow["n"] - 64, grow["n"]), **kw)

    def rebuild() -> object:
        return Rope.from_config(rope.config).cos_sin(torch.arange(grow["n"]), **kw)

    times = measure({"extend": extend, "rebuild": rebuild}, repeats=REPEATS)
    label = f"grow by 64 rows past L={length}: rebuild / extend"
    rows.append(pair_row(times, label, "rebuild", "extend", None, shapes))
    return rows


def main() -> list[Row]:
    return run_length(4096) + run_length(32768)


if __name__ == "__main__":
    cli(main)
