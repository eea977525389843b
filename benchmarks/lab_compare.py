"""Compare two lab results files number by number: are the lab's numbers unchanged (bitwise)?

    python benchmarks/lab_compare.py BASELINE/results.jsonl NEW/results.jsonl

Units are matched by (experiment, model, canonical method label, length, step); rows written before
the one vocabulary carry the lab's old names (``pi``, ``dynamic-ntk``), read here as the registry's
(``linear``, ``dynamic``) through :func:`ropelab.lab.methods.canonical_label`. Every numeric field the
two rows share is compared (lists element by element, ``resolved`` against the old ``params``) except
timings; a unit present in one file only is reported. Exit status 0 only when every unit of both files
matches with a difference of exactly 0.0.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from ropelab.lab.methods import canonical_label
from ropelab.report import read_jsonl

#: fields that are not results: wall-clock timings, provenance, keys
SKIP = frozenset({"unit_seconds", "seconds", "time", "threads", "schema"})


def unit(row: Mapping[str, Any]) -> tuple[Any, ...]:
    label = row.get("label") or canonical_label(str(row["method"]))
    return (row.get("experiment"), row.get("model"), label, row.get("length"), row.get("step"))


def numbers(row: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """(field path, value) of every number in the row (method parameters under ``p.``)."""
    params = row.get("resolved") if "resolved" in row else row.get("params")
    for key, value in {**row, "params": None, "resolved": None}.items():
        if key in SKIP:
            continue
        yield from _flat(key, value)
    for key, value in (params or {}).items():
        if key not in ("method", "log_n"):
            yield from _flat(f"p.{key}", value)


def _flat(key: str, value: Any) -> Iterator[tuple[str, float]]:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        yield key, float(value)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _flat(f"{key}[{i}]", item)


def compare(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, Any]:
    a = {unit(r): r for r in old if r.get("experiment") in ("length", "context", "finetune")}
    b = {unit(r): r for r in new if r.get("experiment") in ("length", "context", "finetune")}
    worst, fields, problems = 0.0, 0, []
    for u in sorted(a.keys() & b.keys(), key=str):
        x, y = dict(numbers(a[u])), dict(numbers(b[u]))
        if x.keys() != y.keys():
            problems.append(f"{u}: fields differ {sorted(x.keys() ^ y.keys())}")
        for key in x.keys() & y.keys():
            fields += 1
            same = x[key] == y[key] or (math.isnan(x[key]) and math.isnan(y[key]))
            if not same:
                problems.append(f"{u} {key}: {x[key]!r} != {y[key]!r}")
                worst = max(worst, abs(x[key] - y[key]))
        for side, name in ((("error" in a[u]), "old"), (("error" in b[u]), "new")):
            if side and a[u].get("error") != b[u].get("error"):
                problems.append(f"{u}: error only in {name}")
    problems += [f"{u}: only in the old file" for u in a.keys() - b.keys()]
    problems += [f"{u}: only in the new file" for u in b.keys() - a.keys()]
    return {"units": len(a.keys() & b.keys()), "fields": fields, "max_abs_diff": worst, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    args = parser.parse_args(argv)
    result = compare(list(read_jsonl(args.old)), list(read_jsonl(args.new)))
    for line in result["problems"][:40]:
        print(line)
    print(
        f"{result['units']} units compared, {result['fields']} numeric fields, "
        f"max abs difference {result['max_abs_diff']!r}, {len(result['problems'])} problems"
    )
    return 0 if not result["problems"] and result["max_abs_diff"] == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main())
