"""PNG plots. matplotlib is imported lazily (the ``plot`` extra) and always with the Agg backend."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ropelab.errors import RopeConfigError

#: Okabe & Ito, "Color Universal Design" (2008): a qualitative palette told apart under the common
#: colour-vision deficiencies. Their yellow (#F0E442) is left out: too faint on white for a line.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000")
#: line styles crossed with the palette: the 8th line is blue again, but dashed
LINESTYLES = ("-", "--", "-.", ":")
#: filled markers (a hollow face can then mark a variant); 9 is coprime with 7 x 4
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
#: the colour map of the passkey heatmaps: perceptually uniform and readable with deuteranopia
#: (Nunez, Anderton & Renslow 2018, "cividis")
HEATMAP_CMAP = "cividis"
#: legend entries per column before a second column starts
LEGEND_ROWS = 20


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


def series_styles(labels: Sequence[str]) -> dict[str, dict[str, str]]:
    """A distinct matplotlib style (``color``, ``linestyle``, ``marker``) for each label, in order.

    The i-th distinct label gets colour ``i % 7`` of :data:`PALETTE`, line style ``(i // 7) % 4`` and
    marker ``i % 9``: colour and line style together repeat every 28 lines and the marker every 9,
    coprime, so the first 252 labels get pairwise distinct triples, and the first seven differ in
    both colour and marker. Deterministic; appending a label leaves the earlier styles unchanged.
    A repeated label keeps its first style.
    """
    unique = list(dict.fromkeys(labels))
    n_colours = len(PALETTE)
    return {
        label: {
            "color": PALETTE[i % n_colours],
            "linestyle": LINESTYLES[(i // n_colours) % len(LINESTYLES)],
            "marker": MARKERS[i % len(MARKERS)],
        }
        for i, label in enumerate(unique)
    }


def legend_outside(fig: Any, ax: Any, *, fontsize: float = 8) -> Any:
    """Put ``ax``'s legend to the right of the axes, never over the data, and widen ``fig`` by its width.

    Columns of at most :data:`LEGEND_ROWS` entries; returns the legend (None without labelled artists).
    """
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    legend = ax.legend(
        handles,
        labels,
        fontsize=fontsize,
        ncol=math.ceil(len(handles) / LEGEND_ROWS),
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
    )
    width = legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi
    fig.set_figwidth(fig.get_figwidth() + width + 0.2)
    return legend


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
    styles = series_styles(list(views))
    for label, rows in views.items():
        pairs = [r["pair"] for r in rows]
        style = {**styles[label], "markersize": 3}
        ax_scale.plot(pairs, [r["scale"] for r in rows], label=label, **style)
        ax_rot.plot(pairs, [max(r["rotations_target"], 1e-12) for r in rows], label=label, **style)
    first = next(iter(views.values()))
    ax_rot.plot(
        [r["pair"] for r in first],
        [r["rotations_trained"] for r in first],
        color="grey",
        linestyle="--",
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
    legend_outside(fig, ax_rot)  # one legend for both panels: the same labels
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def loss_vs_length_figure(
    series: Mapping[str, Sequence[tuple[int, float, float, float]]],
    *,
    trained_length: int | None,
    title: str,
    ylabel: str = "loss (nats/token)",
) -> Any:
    """The figure of :func:`plot_loss_vs_length`, not yet laid out or saved."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    styles = series_styles(list(series))
    for label, points in series.items():
        points = sorted(points)
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], label=label, **styles[label])
        ax.fill_between(
            xs, [p[2] for p in points], [p[3] for p in points], color=styles[label]["color"], alpha=0.12
        )
    if trained_length:
        ax.axvline(trained_length, color="grey", ls="--", lw=1, label=f"trained length {trained_length}")
    ax.set(xlabel="context length (tokens)", ylabel=ylabel, title=title)
    ax.set_xscale("log", base=2)
    ax.grid(True, which="both", alpha=0.3)
    legend_outside(fig, ax)
    return fig


def plot_loss_vs_length(
    series: Mapping[str, Sequence[tuple[int, float, float, float]]],
    path: str | Path,
    *,
    trained_length: int | None,
    title: str,
    ylabel: str = "loss (nats/token)",
) -> Path:
    """One line per label: (length, loss, ci_low, ci_high) points; the trained length marked.

    Each label gets a distinct colour / line style / marker (:func:`series_styles`); the legend sits
    to the right of the axes.
    """
    fig = loss_vs_length_figure(series, trained_length=trained_length, title=title, ylabel=ylabel)
    return save_figure(fig, path)


# ------------------------------------------------------------------ passkey heatmap
Trials = int | Mapping[tuple[int, float], int] | None


def _cell_trials(trials: Trials, key: tuple[int, float]) -> int | None:
    if trials is None or isinstance(trials, int):
        return trials
    return trials.get(key)


def trials_caption(trials: Trials, keys: Iterable[tuple[int, float]]) -> str:
    """``"n = 10 trials per cell"`` (or ``"n = 5-10 ..."`` when cells differ); ``""`` without trials."""
    if trials is None:
        return ""
    counts = sorted({n for n in (_cell_trials(trials, k) for k in keys) if n is not None})
    if any(n < 1 for n in counts):
        raise RopeConfigError(f"plot_heatmap: trials must be >= 1, got {counts[0]}")
    if not counts:
        return ""
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"n = {span} trials per cell"


def heatmap_cell_labels(
    grid: Mapping[tuple[int, float], float],
    lengths: Sequence[int],
    depths: Sequence[float],
    trials: Trials = None,
) -> list[list[str]]:
    """The text of each heatmap cell, rows by depth and columns by length.

    ``"k/n"`` (correct / trials, k = round(accuracy * n)) where the cell's trial count is known,
    the accuracy as a percentage otherwise, ``"-"`` for a missing or NaN cell.
    """
    out = []
    for depth in depths:
        row = []
        for length in lengths:
            value = grid.get((length, depth), math.nan)
            n = _cell_trials(trials, (length, depth))
            if value != value:
                row.append("-")
            elif n is not None:
                row.append(f"{round(value * n)}/{n}")
            else:
                row.append(f"{value:.0%}")
        out.append(row)
    return out


def text_colour(rgba: Sequence[float]) -> str:
    """``"black"`` or ``"white"``, whichever contrasts more with a cell of colour ``rgba`` (0..1).

    WCAG 2.x relative luminance of the sRGB colour; black and white contrast equally at
    L = 0.179 (where (L + 0.05) / 0.05 = 1.05 / (L + 0.05)).
    """

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgba[:3])
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.179 else "white"


def heatmap_figure(
    grid: Mapping[tuple[int, float], float],
    *,
    title: str,
    trained_length: int | None = None,
    trials: Trials = None,
) -> Any:
    """The figure of :func:`plot_heatmap`, not yet laid out or saved."""
    plt = pyplot()
    from matplotlib import colormaps

    lengths = sorted({k[0] for k in grid})
    depths = sorted({k[1] for k in grid})
    data = [[grid.get((length, depth), math.nan) for length in lengths] for depth in depths]
    labels = heatmap_cell_labels(grid, lengths, depths, trials)
    cmap = colormaps[HEATMAP_CMAP].with_extremes(bad="white")  # not on the map: a missing cell
    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2.4, 0.6 * len(depths) + 2))
    im = ax.imshow(data, vmin=0, vmax=1, cmap=cmap, aspect="auto")
    for i, row in enumerate(data):
        for j, value in enumerate(row):
            colour = "black" if value != value else text_colour(cmap(value))
            ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(
        range(len(lengths)),
        [str(x) + ("*" if trained_length and x > trained_length else "") for x in lengths],
    )
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    caption = trials_caption(trials, grid)
    ax.set(
        xlabel="prompt length (* beyond trained)",
        ylabel="key depth",
        title=f"{title}\n{caption}" if caption else title,
    )
    fig.colorbar(im, ax=ax, label="accuracy")
    return fig


def plot_heatmap(
    grid: Mapping[tuple[int, float], float],
    path: str | Path,
    *,
    title: str,
    trained_length: int | None = None,
    trials: Trials = None,
) -> Path:
    """Passkey accuracy: lengths on x, depths on y, accuracy as colour (cividis) and as text.

    ``trials``: the trials per cell, one count for all or one per ``(length, depth)``; given, each
    cell reads ``"correct/trials"`` and the title says ``"n = T trials per cell"``.
    """
    fig = heatmap_figure(grid, title=title, trained_length=trained_length, trials=trials)
    return save_figure(fig, path)
