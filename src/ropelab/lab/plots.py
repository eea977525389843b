"""The lab's plots (PNG), drawn from its rows alone: loss by position, by length and by context;
fine-tuning curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ropelab.lab.tables import Records, finetune_rows, index_rows, lengths_of, nx, trained_of
from ropelab.registry import REGISTRY, parse_method
from ropelab.report.plots import legend_outside, pyplot, series_styles


def _style(label: str) -> dict[str, Any]:
    """The line style of a lab method label ``NAME[*A][+log-n]``.

    The method name picks colour and marker (:func:`ropelab.report.plots.series_styles` over every
    method of :data:`ropelab.REGISTRY`, in registry order, so there is no fixed count and a method keeps
    its colour in every plot); the variant picks the line: plain solid, ``+log-n`` dashed with a hollow
    marker, ``*A`` dotted with A as the marker, ``*A+log-n`` dash-dot with A as the marker.
    """
    spec = parse_method(label)
    log_n, alpha = spec.log_n, spec.multiplier
    methods = [n for n, e in REGISTRY.items() if e.kind != "encoding"]
    base = series_styles(methods)[spec.method]
    style = {"color": base["color"], "linestyle": "--" if log_n else "-", "marker": base["marker"]}
    if log_n:
        style["markerfacecolor"] = "none"
    if alpha != 1:  # a number as marker has no hollow face: the line style tells +log-n apart
        style.pop("markerfacecolor", None)
        style.update(linestyle="-." if log_n else ":", marker=f"${alpha:g}$")
    return style


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
    series = [(m, "none", style) for m, style in series_styles(models or []).items()]
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
    legend_outside(fig, axes[-1], fontsize=7)
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
            label=method,
            **_style(method),
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
    legend_outside(fig, ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
