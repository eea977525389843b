"""Run every benchmark of the suite and write ``benchmarks/RESULTS.md`` (``make bench``).

A script belongs to the suite when it has a line ``SUITE = True`` (and ``main() -> list[row]``, run
through ``common.cli``). Each runs in its own process (``--json``), one after another; the others are
listed in RESULTS.md with the command that runs them. Every number is a ratio of variants timed within
one script's run, never an absolute time compared across runs.

``--only`` runs just those scripts and updates their sections of an existing RESULTS.md (each stamped
with its own date and machine), keeping every other section and the header of the last full run.

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
OTHERS = "Not in the suite (run separately)"
#: sections written by other scripts (``benchmarks/gpu.sh``), kept as they are by every run here
KEPT = ("GPU",)
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


def render(
    results: list[tuple[Path, list[dict], float, str]], others: list[Path], header: str, stamp: str = ""
) -> str:
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
        lines += [f"## {path.name}", "", doc_line(path), "", f"Ran in {seconds:.0f} s.{stamp}", ""]
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
        lines += [f"## {OTHERS}", ""]
        for path in others:
            lines.append(f"- `{path.name}`: {doc_line(path)} Run: `.venv/bin/python benchmarks/{path.name}`")
        lines.append("")
    return "\n".join(lines)


def sections(text: str) -> tuple[str, dict[str, str]]:
    """(the text before the first ``## `` heading, {heading: its section's text})."""
    head, *parts = re.split(r"^(?=## )", text, flags=re.MULTILINE)
    return head, {part.split("\n", 1)[0][3:].strip(): part for part in parts}


def merge(old: str, new: str, scripts: set[str]) -> str:
    """``old`` RESULTS.md with the script sections of ``new`` put in (replacing or added, in name order)
    and its "not in the suite" list replaced; sections of scripts no longer in ``scripts`` dropped."""
    head, kept = sections(old)
    _, fresh = sections(new)
    merged = {k: v for k, v in kept.items() if k in scripts or k.startswith(KEPT)}
    merged.update((k, v) for k, v in fresh.items() if k != OTHERS)
    parts = [merged[k] for k in sorted(merged)] + ([fresh[OTHERS]] if OTHERS in fresh else [])
    return head + "".join(part.rstrip("\n") + "\n\n" for part in parts).rstrip("\n") + "\n"


def keep_sections(new: str, old: str) -> str:
    """``new`` with the :data:`KEPT` sections of ``old`` (written by other scripts) put back in name order."""
    head, parts = sections(new)
    parts.update((k, v) for k, v in sections(old)[1].items() if k.startswith(KEPT))
    order = sorted(k for k in parts if k != OTHERS) + ([OTHERS] if OTHERS in parts else [])
    return head + "".join(parts[k].rstrip("\n") + "\n\n" for k in order).rstrip("\n") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated script names (without .py)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--note", default="", help="with --only: a sentence added to each updated section")
    args = parser.parse_args()
    inside, others = suite_scripts()
    suite = {p.name for p in inside}
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {p.stem for p in inside}
        if unknown:
            sys.exit(f"not suite scripts: {', '.join(sorted(unknown))}")
        inside = [p for p in inside if p.stem in wanted]
    header = machine()
    results = []
    for path in inside:
        print(f"running {path.name} ...", flush=True)
        rows, seconds, error = run_script(path)
        print(f"  {len(rows)} rows in {seconds:.0f} s" + (f"; FAILED:\n{error}" if error else ""), flush=True)
        results.append((path, rows, seconds, error))
    out = Path(args.out)
    if args.only and out.exists():
        stamp = f" Updated alone (`run_all.py --only`) on {dt.date.today().isoformat()}; machine: {header}."
        stamp += f" {args.note}" if args.note else ""
        out.write_text(merge(out.read_text(), render(results, others, header, stamp), suite))
    else:
        text = render(results, others, header)
        out.write_text(keep_sections(text, out.read_text()) if out.exists() else text)
    print(f"wrote {args.out}")
    if any(error for *_, error in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
