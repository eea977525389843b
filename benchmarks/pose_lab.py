"""PoSE in the lab: summarise the runs of ``benchmarks/pose_lab.sh`` (docs/finetune.md, "PoSE").

    benchmarks/pose_lab.sh OUT                     # the runs: ropelab finetune --model lab ...
    python benchmarks/pose_lab.py OUT docs/pose    # -> lab_runs.jsonl, lab_summary.md, lab_heldout.png

Each run folder ``OUT/METHOD-MODE-sSEED`` holds ``ropelab finetune``'s ``results.jsonl`` and ``run.json``.
Written to the docs folder: ``lab_runs.jsonl`` (one row per run and held-out evaluation: method, mode,
seed, step, the held-out loss at the target over all positions / inside / beyond T, training tokens per
step, wall seconds of the run), ``lab_summary.md`` (the final held-out loss per method and mode: mean and
spread over the seeds, the gap to fine-tuning at the target directly) and ``lab_heldout.png`` (held-out
loss vs step, mean over the seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ropelab.report import read_jsonl

#: mode name in the folder -> what the tables call it
MODES = {
    "direct512": "at 512 directly",
    "pose128to512": "PoSE: 128-token windows toward 512",
    "short128to512": "128-token windows, no skips (control)",
    "pose128to512x400steps": "PoSE, 400 steps",
    "poseskip128to512": "PoSE, text skipped with the ids",
}


def collect(out: Path) -> list[dict[str, Any]]:
    """The evaluation rows of every finished run under ``out``."""
    rows = []
    for folder in sorted(p for p in out.iterdir() if (p / "run.json").exists()):
        summary = json.loads((folder / "run.json").read_text())
        if not summary.get("finished"):
            continue
        method, mode, seed = folder.name.rsplit("-", 2)
        cfg = next(r for r in read_jsonl(folder / "results.jsonl") if r.get("kind") == "final")["finetune"]
        for r in read_jsonl(folder / "results.jsonl"):
            if r.get("kind") != "eval":
                continue
            rows.append(
                {
                    "method": method,
                    "label": r["label"],
                    "resolved": r["resolved"],
                    "mode": mode,
                    "seed": int(seed[1:]),
                    "step": r["step"],
                    "eval_length": r["length"],
                    "loss": r["loss"],
                    "loss_within": r["loss_within"],
                    "loss_beyond": r["loss_beyond"],
                    "train_length": cfg["length"],
                    "pose": cfg.get("pose"),
                    "pose_chunks": cfg.get("pose_chunks"),
                    "tokens_per_step": cfg["global_batch"] * cfg["length"],
                    "steps": cfg["steps"],
                    "run_seconds": summary["seconds_this_run"],
                    "command": summary["command"],
                }
            )
    return rows


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per method and mode, the final held-out loss at 512 (mean, min-max over seeds)."""
    final: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["step"] == r["steps"]:
            final[(r["method"], r["mode"])].append(r)
    zero: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["step"] == 0 and r["mode"] == "direct512":
            zero[r["method"]].append(r["loss"])
    lines = [
        "| method | fine-tuning | seeds | steps | tokens / step | held-out loss at 512 (mean; min-max) | "
        "inside T | beyond T | vs direct | wall s / run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in sorted({m for m, _ in final}):
        direct = final.get((method, "direct512"))
        base = statistics.mean(r["loss"] for r in direct) if direct else None
        if zero.get(method):
            lines.append(
                f"| {method} | none (zero-shot) | - | 0 | 0 | {statistics.mean(zero[method]):.4f} | | | "
                f"{_gap(statistics.mean(zero[method]), base)} | |"
            )
        for mode in MODES:
            runs = final.get((method, mode))
            if not runs:
                continue
            losses = [r["loss"] for r in runs]
            mean = statistics.mean(losses)
            first = runs[0]
            lines.append(
                f"| {method} | {MODES[mode]} | {len(runs)} | {first['steps']} | {first['tokens_per_step']} "
                f"| {mean:.4f} ({min(losses):.4f}-{max(losses):.4f}) "
                f"| {statistics.mean(r['loss_within'] for r in runs):.4f} "
                f"| {statistics.mean(r['loss_beyond'] for r in runs):.4f} | {_gap(mean, base)} "
                f"| {statistics.mean(r['run_seconds'] for r in runs):.0f} |"
            )
    return "\n".join(lines) + "\n"


def _gap(value: float, base: float | None) -> str:
    return f"{100 * (value / base - 1):+.1f}%" if base else ""


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Held-out loss at 512 vs optimiser step, mean over the seeds: a panel per method, a line per mode."""
    from ropelab.report.plots import legend_outside, pyplot, save_figure, series_styles

    curves: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in rows:
        curves[r["method"]][r["mode"]][r["step"]].append(r["loss"])
    styles = series_styles(list(MODES))
    methods = sorted(curves)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4.2), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        for mode in MODES:
            if mode not in curves[method]:
                continue
            points = curves[method][mode]
            steps = sorted(points)
            ax.plot(
                steps,
                [statistics.mean(points[s]) for s in steps],
                label=f"{MODES[mode]} ({len(points[steps[-1]])} seeds)",
                **styles[mode],
            )
        ax.set_title(f"{method}, s = 4: held-out loss at 512", fontsize=10)
        ax.set_xlabel("optimiser step (4 windows a step)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("nats/byte (mean over seeds)")
    fig.suptitle(
        "lab RoPE model (T = 128) fine-tuned for 512: directly vs PoSE on 128-token windows", fontsize=10
    )
    legend_outside(fig, axes[0][-1])
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder benchmarks/pose_lab.sh wrote")
    parser.add_argument("docs", type=Path, help="where the summary goes (docs/pose)")
    args = parser.parse_args()
    rows = collect(args.out)
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "lab_runs.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    table = summary_table(rows)
    (args.docs / "lab_summary.md").write_text(table)
    plot(rows, args.docs / "lab_heldout.png")
    print(table)


if __name__ == "__main__":
    main()
