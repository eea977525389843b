"""Run every benchmark of the suite and write ``benchmarks/RESULTS.md`` (``make bench``).

A script belongs to the suite when it has a line ``SUITE = True`` (and ``main() -> list[row]``, run
through ``common.cli``). Each runs in its own process (``--json``), one after another; the others are
listed in RESULTS.md with the command that runs them. Every number is a ratio of variants timed within
one script's run, never an absolute time compared across runs.

    .venv/bin/python benchmarks/run_all.py [--only rotary_speed,cos_sin_cache] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py", "common.py"}
TABLE_HEAD = "| config | ratio (median) | ratio (best times) | target | result | shapes |"


def suite_scripts() -> tuple[list[Path], list[Path]]:
    """(scripts in the suite, other benchmark scripts)."""
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in SKIP)
    inside = [p for p in scripts if re.search(r"^SUITE = True\b", p.read_text(), re.MULTILINE)]
    return inside, [p for p in scripts if p not in inside]


def machine() -> str:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.platform()}, {platform.machine()} {platform.processor() or ''}".strip()
        + f", {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads),"
        + f" Python {platform.python_version()}, load average {load:.1f} at start"
    )


def doc_line(path: Path) -> str:
    match = re.search(r'^"""(.+?)$', path.read_text(), re.MULTILINE)
    return match.group(1).strip() if match else ""


def run_script(path: Path) -> tuple[list[dict], float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(path), "--json", str(out)], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0 or not out.exists():
            return [], seconds, (done.stderr or done.stdout).strip()[-2000:]
        return json.loads(out.read_text()), seconds, ""


def render(results: list[tuple[Path, list[dict], float, str]], others: list[Path], header: str) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`benchmarks/run_all.py`) on {dt.date.today().isoformat()}.",
        "",
        f"Machine: {header}.",
        "",
        "Every number is a ratio of two variants timed in the same run: the variants are interleaved",
        "(round-robin, rotating start). *ratio (median)*, which decides pass/miss, is the median over",
        "rounds of the per-round ratio; *ratio (best times)* divides the two variants' fastest rounds (the",
        "cost with the least interference from other processes). Absolute times on a shared machine are",
        "noise; the ms are there only to read the ratios.",
        "",
    ]
    for path, rows, seconds, error in results:
        lines += [f"## {path.name}", "", doc_line(path), "", f"Ran in {seconds:.0f} s.", ""]
        if error:
            lines += ["**Failed:**", "", "```", error, "```", ""]
            continue
        claims: dict[str, list[dict]] = {}
        for r in rows:
            claims.setdefault(r["claim"], []).append(r)
        for claim, claim_rows in claims.items():
            passed = [r["pass"] for r in claim_rows if r["pass"] is not None]
            tally = f" ({sum(passed)}/{len(passed)} meet the target)" if passed else ""
            lines += [f"### {claim}{tally}", "", TABLE_HEAD, "|---|---:|---:|---|---|---|"]
            for r in claim_rows:
                verdict = "-" if r["pass"] is None else ("pass" if r["pass"] else "**miss**")
                target = (r["target"] or "-").replace(">=", "≥").replace("<=", "≤")
                best = "-" if r.get("best") is None else f"{r['best']:.2f}x"
                cells = (r["config"], f"{r['ratio']:.2f}x", best, target, verdict, r["shapes"])
                lines.append("| " + " | ".join(cells) + " |")
            details = [r for r in claim_rows if r["detail"]]
            if details:
                lines += ["", "<details><summary>median times</summary>", ""]
                lines += [f"- {r['config']}: {r['detail']}" for r in details]
                lines += ["", "</details>"]
            lines.append("")
    if others:
        lines += ["## Not in the suite (run separately)", ""]
        for path in others:
            lines.append(f"- `{path.name}`: {doc_line(path)} Run: `.venv/bin/python benchmarks/{path.name}`")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated script names (without .py)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    inside, others = suite_scripts()
    if args.only:
        wanted = set(args.only.split(","))
        inside = [p for p in inside if p.stem in wanted]
    header = machine()
    results = []
    for path in inside:
        print(f"running {path.name} ...", flush=True)
        rows, seconds, error = run_script(path)
        print(f"  {len(rows)} rows in {seconds:.0f} s" + (f"; FAILED:\n{error}" if error else ""), flush=True)
        results.append((path, rows, seconds, error))
    Path(args.out).write_text(render(results, others, header))
    print(f"wrote {args.out}")
    if any(error for *_, error in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
