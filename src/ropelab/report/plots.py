"""PNG plots. matplotlib is imported lazily (the ``plot`` extra) and always with the Agg backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ropelab.errors import RopeConfigError


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or a clear error if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RopeConfigError("plots need matplotlib: pip install 'ropelab[plot]'") from None
    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write ``fig`` as a PNG (creating its folder) and close it."""
    plt = pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pair_views(
    views: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    *,
    trained_length: int,
    target_length: int,
    title: str = "",
) -> Path:
    """Methods side by side over the pair index: frequency scale, and rotations at the target length.

    ``views``: label -> rows of :class:`ropelab.rope.inspect.PairView` as dicts.
    """
    plt = pyplot()
    fig, (ax_scale, ax_rot) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, rows in views.items():
        pairs = [r["pair"] for r in rows]
        ax_scale.plot(pairs, [r["scale"] for r in rows], marker=".", label=label)
        ax_rot.plot(pairs, [max(r["rotations_target"], 1e-12) for r in rows], marker=".", label=label)
    first = next(iter(views.values()))
    ax_rot.plot(
        [r["pair"] for r in first],
        [r["rotations_trained"] for r in first],
        "k--",
        label=f"seen in training (L0={trained_length})",
    )
    ax_rot.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax_rot.text(0, 1.05, "one full turn", color="grey", fontsize=8)
    ax_scale.set(
        xlabel="rotary pair i (fast -> slow)",
        ylabel="theta'_i / theta_i",
        yscale="log",
        title="frequency scale (1 = untouched, 1/s = PI)",
    )
    ax_rot.set(
        xlabel="rotary pair i (fast -> slow)",
        ylabel="turns completed",
        yscale="log",
        title=f"turns at the target length T={target_length}",
    )
    for ax in (ax_scale, ax_rot):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_loss_vs_length(
    series: Mapping[str, Sequence[tuple[int, float, float, float]]],
    path: str | Path,
    *,
    trained_length: int | None,
    title: str,
    ylabel: str = "loss (nats/token)",
) -> Path:
    """One line per label: (length, loss, ci_low, ci_high) points; the trained length marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, points in series.items():
        points = sorted(points)
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], marker="o", label=label)
        ax.fill_between(xs, [p[2] for p in points], [p[3] for p in points], alpha=0.15)
    if trained_length:
        ax.axvline(trained_length, color="k", ls="--", lw=1, label=f"trained length {trained_length}")
    ax.set(xscale="log", xlabel="context length (tokens)", ylabel=ylabel, title=title)
    ax.set_xscale("log", base=2)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_heatmap(
    grid: Mapping[tuple[int, float], float],
    path: str | Path,
    *,
    title: str,
    trained_length: int | None = None,
) -> Path:
    """Passkey accuracy: lengths on x, depths on y, accuracy as colour and number."""
    plt = pyplot()
    lengths = sorted({k[0] for k in grid})
    depths = sorted({k[1] for k in grid})
    data = [[grid.get((length, depth), float("nan")) for length in lengths] for depth in depths]
    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2, 0.6 * len(depths) + 2))
    im = ax.imshow(data, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for i, row in enumerate(data):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.0%}" if value == value else "-", ha="center", va="center", fontsize=8)
    ax.set_xticks(
        range(len(lengths)),
        [str(x) + ("*" if trained_length and x > trained_length else "") for x in lengths],
    )
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set(xlabel="prompt length (* beyond trained)", ylabel="key depth", title=title)
    fig.colorbar(im, ax=ax, label="accuracy")
    return save_figure(fig, path)
