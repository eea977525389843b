"""Timing helpers shared by the benchmark scripts (not a benchmark itself).

Absolute times on a shared machine are noise; every claim is a ratio of two variants timed in the same
run. :func:`measure` interleaves the variants (round-robin, the starting variant rotating each round) and
:func:`ratio` takes the median over rounds of the per-round ratio, so a load spike that hits one round
moves every variant of that round together.

A suite script declares ``SUITE = True``, defines ``main() -> list[Row]`` and ends with
``cli(main)``: run alone it prints its rows; ``--json PATH`` (used by ``run_all.py``) writes them.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]
Times = dict[str, list[float]]


#: what :func:`measure` reads: wall time, or the process's CPU time (all its threads), which a machine
#: shared with other jobs inflates far less when the measured process runs one thread (with several,
#: threads that spin-wait for a descheduled sibling count too)
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def measure(
    variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 2, *, clock: str = "wall"
) -> Times:
    """Seconds per call of each variant, ``repeats`` rounds, variants interleaved within each round;
    ``clock``: a key of :data:`CLOCKS`."""
    now = CLOCKS[clock]
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: Times = {name: [] for name in names}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                start = now()
                result = variants[name]()
                times[name].append(now() - start)
                del result  # freed outside the timed region
    finally:
        if was_enabled:
            gc.enable()
    return times


def ratio(times: Times, num: str, den: str) -> float:
    """Median over rounds of ``time[num] / time[den]``."""
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def best_ratio(times: Times, num: str, den: str) -> float:
    """``min(time[num]) / min(time[den])``: the two variants' costs with the least interference from
    other processes (reported beside :func:`ratio`, which decides pass/miss)."""
    return min(times[num]) / min(times[den])


def median_ms(times: Times, name: str) -> float:
    return 1e3 * statistics.median(times[name])


def row(
    claim: str,
    config: str,
    value: float,
    target: str | None,
    shapes: str,
    detail: str = "",
    best: float | None = None,
) -> Row:
    """One result: ``value`` a :func:`ratio`, ``best`` the :func:`best_ratio` of the same pair.
    ``target``: ``">= X"`` or ``"<= X"`` (checked on ``value``), or ``None`` (reported only)."""
    passed = None
    if target is not None:
        op, bound = target.split()
        passed = value >= float(bound) if op == ">=" else value <= float(bound)
    return {
        "claim": claim,
        "config": config,
        "ratio": round(value, 3),
        "best": None if best is None else round(best, 3),
        "target": target,
        "pass": passed,
        "shapes": shapes,
        "detail": detail,
    }


def print_rows(rows: list[Row]) -> None:
    for r in rows:
        verdict = "" if r["pass"] is None else ("PASS" if r["pass"] else "MISS")
        target = r["target"] or "-"
        best = "" if r["best"] is None else f"(best {r['best']:.2f}x)"
        print(f"{r['config']:<48} {r['ratio']:>6.2f}x {best:>13} {target:>7} {verdict:>4}  {r['detail']}")


def cli(main: Callable[[], list[Row]]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", help="write the rows to this file instead of printing them")
    args = parser.parse_args()
    rows = main()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f)
    else:
        print_rows(rows)
