"""The figure of ``benchmarks/smollm2_context.sh``: does a method let SmolLM2 *use* 16k and 32k tokens?

One panel per run folder (code, English): the loss on the same last 256 tokens against the context given
before them, one line per method, and a dashed line at the unmodified model's own loss at its trained
length (the best it can do inside its window): a method uses the longer context where its line ends
below the dashed one. Points above the panel's range (the unmodified model beyond its trained length)
are drawn at the top edge with their value written beside them.

    python benchmarks/smollm2_context_plot.py docs/smollm2-context/code docs/smollm2-context/english \\
        --out docs/smollm2-context/context.png

Reads only the rows (``results.jsonl``) that ``ropelab eval --score-last`` wrote; loads no model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ropelab.errors import RopeConfigError
from ropelab.evaluate import read_results
from ropelab.evaluate.report import label_of, series, trained_length_of
from ropelab.report.plots import pyplot, series_styles

#: how far above the dashed line a panel reaches (nats/token); higher points are clipped to the edge
HEADROOM = 0.6


def last_rows(folder: Path) -> list[dict[str, Any]]:
    """The ``last`` (same-tokens) rows of one eval folder, or a clear error."""
    rows = [r for r in read_results([folder]) if r.get("command") == "eval" and r.get("metric") == "last"]
    if not rows:
        raise RopeConfigError(f"{folder}: no `ropelab eval --score-last` rows")
    return rows


def panel(ax: Any, rows: list[dict[str, Any]], title: str, styles: dict[str, dict[str, str]]) -> None:
    """Loss vs context length per method on ``ax``; the baseline ``none`` at the trained length dashed."""
    trained = trained_length_of(rows)
    best = [r["loss"] for r in rows if r["method"] == "none" and r["length"] == trained]
    floor = min(r["loss"] for r in rows)
    top = (best[0] if best else max(r["loss"] for r in rows)) + HEADROOM
    clipped: dict[int, int] = {}  # length -> clipped points written there so far (stacked labels)
    for label, members in series(rows).items():
        pts = sorted((int(r["length"]), float(r["loss"])) for r in members)
        xs = [x for x, _ in pts]
        ax.plot(xs, [min(y, top) for _, y in pts], label=label, **styles[label])
        for x, y in pts:
            if y > top:
                n = clipped[x] = clipped.get(x, 0) + 1
                ax.annotate(
                    f"{label}: {y:.2f}",
                    (x, top),
                    textcoords="offset points",
                    xytext=(-6, -10 * n),
                    fontsize=7,
                    ha="right",
                    color=styles[label]["color"],
                )
    if best:
        ax.axhline(best[0], color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            f"none at {trained}: {best[0]:.3f}",
            (xs[-1], best[0]),
            textcoords="offset points",
            xytext=(0, -10),
            fontsize=7,
            color="grey",
            ha="right",
        )
    if trained:
        ax.axvline(trained, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [f"{x // 1024}k" for x in xs])
    ax.set_ylim(floor - 0.05, top + 0.05)
    ax.set_xlabel("tokens of context before the scored 256")
    ax.set_ylabel("loss on the last 256 tokens (nats/token)")
    ax.set_title(title, fontsize=9)


def plot(folders: list[Path], out: Path) -> Path:
    plt = pyplot()
    per_folder = [last_rows(f) for f in folders]
    labels = [label_of(r) for rows in per_folder for r in rows]
    styles = series_styles(labels)
    fig, axes = plt.subplots(1, len(folders), figsize=(5.2 * len(folders) + 2.2, 4.2), squeeze=False)
    for ax, folder, rows in zip(axes[0], folders, per_folder, strict=True):
        corpus = rows[0].get("corpus", {}).get("name", "?")
        docs = max(int(r.get("docs") or 0) for r in rows)
        panel(ax, rows, f"{folder.name} ({corpus}, {docs} document{'s' * (docs != 1)})", styles)
    fig.suptitle("SmolLM2-135M-Instruct (Q4_1 GGUF), trained to 8192 tokens", fontsize=10)
    fig.tight_layout()
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")  # the legend right of the panels, inside the image
    plt.close(fig)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="ropelab eval --score-last run folders")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = p.parse_args()
    try:
        print(f"plot: {plot(args.folders, args.out)}")
    except RopeConfigError as err:
        print(f"smollm2_context_plot.py: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
