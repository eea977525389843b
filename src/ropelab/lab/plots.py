"""The lab's plots (PNG), drawn from its rows alone: loss by position, by length and by context;
fine-tuning curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ropelab.lab.methods import METHODS, parse_label
from ropelab.lab.tables import Records, finetune_rows, index_rows, lengths_of, nx, trained_of
from ropelab.report.plots import pyplot


def _style(label: str) -> dict[str, Any]:
    name, log_n, alpha = parse_label(label)
    colours = dict(zip(METHODS, [f"C{i}" for i in range(10)], strict=True))
    marker = "x" if log_n else ("." if alpha == 1 else f"${alpha:g}$")
    return {"color": colours[name], "ls": "--" if log_n else ("-" if alpha == 1 else ":"), "marker": marker}


def plot_lengths(
    records: Records,
    path: Path,
    *,
    models: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Two panels: loss beyond T vs evaluation length, and the same last T tokens vs context."""
    plt = pyplot()
    T, lengths = trained_of(records), lengths_of(records)
    idx, ctx = index_rows(records, "length"), index_rows(records, "context")
    series = [(m, "none", {"marker": "o"}) for m in models or []]
    series += [("rope", label, _style(label)) for label in labels or []]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for model, method, style in series:
        name = model if models else method
        longest = idx.get((model, method, lengths[-1]))
        if longest is not None:
            blocks = longest["block_loss"]
            axes[0].plot([(i + 0.5) * T for i in range(len(blocks))], blocks, label=name, **style)
        xs = [n for n in lengths if (model, method, n) in idx]
        axes[1].plot(xs, [idx[(model, method, n)]["loss"] for n in xs], label=name, **style)
        xs = [n for n in lengths if (model, method, n) in ctx]
        axes[2].plot(xs, [ctx[(model, method, n)]["loss_last"] for n in xs], label=name, **style)
    titles = (
        f"loss per position block ({nx(lengths[-1], T)} evaluation)",
        "mean loss over the first L tokens",
        f"same last {T} tokens, L tokens of context",
    )
    xlabels = ("position", "evaluation length L", "context length L")
    for ax, t, xl in zip(axes, titles, xlabels, strict=True):
        ax.axvline(T, color="k", lw=0.8, ls=":")
        ax.text(T, 1.0, " trained length", transform=ax.get_xaxis_transform(), fontsize=8, va="top")
        ax.set(xscale="log", xlabel=xl, ylabel="NLL (nats / byte)", title=t)
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
    _clip(axes, records)
    axes[-1].legend(fontsize=7, ncol=2 if labels else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _clip(axes: Any, records: Records) -> None:
    """Keep the interesting range visible when a broken encoding's loss explodes."""
    inside = [r["loss_inside"] for r in records if r.get("experiment") == "length" and r.get("loss_inside")]
    if inside:
        low = min(inside)
        for ax in axes:
            _, high = ax.get_ylim()
            ax.set_ylim(max(0.0, low - 0.3), min(high, low + 4.0))


def plot_finetune(records: Records, path: Path, *, reference: Mapping[str, float] | None = None) -> Path:
    """Loss at the fine-tuning length against steps, one line per method."""
    plt = pyplot()
    rows, methods = finetune_rows(records)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        pts = [(r["step"], r[method]) for r in rows if r.get(method) is not None]
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            label=method,
            **{k: v for k, v in _style(method).items() if k == "color"},
        )
    for i, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(value, color=f"C{i + 5}", lw=0.9, ls=":", label=name)
    length = next((r["length"] for r in records if r.get("experiment") == "finetune"), 0)
    ax.set(
        xlabel="fine-tuning steps",
        ylabel="NLL (nats / byte)",
        title=f"fine-tuning at length {length}: loss at {length}",
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
