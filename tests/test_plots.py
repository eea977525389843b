"""Plots that stay readable with many lines: distinct styles, legends beside the data, and passkey
heatmaps in a colour-blind-safe map that say how many trials each cell holds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from ropelab.errors import RopeConfigError
from ropelab.lab import methods as lab_methods
from ropelab.lab import plots as lab_report
from ropelab.report.plots import (
    heatmap_cell_labels,
    heatmap_figure,
    loss_vs_length_figure,
    plot_heatmap,
    plot_loss_vs_length,
    series_styles,
    text_colour,
    trials_caption,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _key(style: dict) -> tuple:
    return tuple(sorted(style.items()))


def _series(n: int) -> dict[str, list[tuple[int, float, float, float]]]:
    return {
        f"method {i:02d}": [
            (L, 2.0 + 0.1 * i + L / 4096, 1.9 + 0.1 * i, 2.1 + 0.1 * i) for L in (512, 1024, 2048)
        ]
        for i in range(n)
    }


@pytest.mark.parametrize("n", [20, 25, 300])
def test_series_styles_are_pairwise_distinct_and_deterministic(n: int) -> None:
    labels = [f"s{i}" for i in range(n)]
    styles = series_styles(labels)
    assert list(styles) == labels
    assert all(set(s) == {"color", "linestyle", "marker"} for s in styles.values())
    keys = [_key(s) for s in styles.values()]
    distinct = min(n, 252)  # 7 colours x 4 line styles x 9 markers, coprime: 252 before a repeat
    assert len(set(keys[:distinct])) == distinct
    assert series_styles(labels) == styles
    # a label added at the end leaves every earlier style as it was
    assert {k: v for k, v in series_styles([*labels, "new"]).items() if k != "new"} == styles


def test_series_styles_first_lines_differ_in_colour_and_marker() -> None:
    """The first seven lines (the common case) differ in colour and in marker, never in colour alone."""
    styles = list(series_styles([str(i) for i in range(7)]).values())
    assert len({s["color"] for s in styles}) == 7 and len({s["marker"] for s in styles}) == 7
    assert {s["linestyle"] for s in styles} == {"-"}


def test_series_styles_repeated_label_gets_one_style() -> None:
    assert list(series_styles(["a", "b", "a"])) == ["a", "b"]


@pytest.mark.parametrize("n", [20, 25])
def test_loss_vs_length_many_lines_legend_beside_the_axes(tmp_path: Path, n: int) -> None:
    fig = loss_vs_length_figure(_series(n), trained_length=1024, title=f"{n} lines")
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if line.get_label().startswith("method")]
    assert len(lines) == n
    styles = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(styles) == n
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    legend, axes_box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= axes_box.x1  # beside the data, never over it
    assert legend.x1 <= fig.bbox.x1 + 1  # and inside the figure: the figure grew to hold it
    narrow = loss_vs_length_figure(_series(2), trained_length=1024, title="2 lines")
    assert fig.get_figwidth() > narrow.get_figwidth()
    path = plot_loss_vs_length(_series(n), tmp_path / "loss.png", trained_length=1024, title="t")
    assert path.read_bytes()[:8] == PNG


def _lab_records(labels: list[str], lengths=(64, 128, 256)) -> list[dict]:
    records = []
    for i, label in enumerate(labels):
        for L in lengths:
            blocks = [2.0 + 0.01 * i + 0.2 * b for b in range(L // 64)]
            common = {"model": "rope", "method": label, "length": L, "trained_length": 64}
            records.append(
                {**common, "experiment": "length", "loss": sum(blocks) / len(blocks), "block_loss": blocks}
                | {"loss_inside": 2.0 + 0.01 * i}
            )
            records.append({**common, "experiment": "context", "loss_last": 2.0 + 0.01 * i + L / 1e4})
    return records


def _lab_labels(n: int) -> list[str]:
    plain = [m for name in lab_methods.METHODS for m in (name, f"{name}+log-n")]
    scaled = ["pi*2", "ntk*2", "ntk*4", "yarn*2", "yarn*4+log-n"]
    return [*plain, *scaled][:n]


@pytest.mark.parametrize("n", [20, 25])
def test_lab_plot_lengths_many_labels(tmp_path: Path, n: int) -> None:
    labels = _lab_labels(n)
    assert len(set(labels)) == n
    styles = [_key(lab_report._style(label)) for label in labels]
    assert len(set(styles)) == n
    path = lab_report.plot_lengths(_lab_records(labels), tmp_path / "lab.png", labels=labels, title="t")
    assert path.read_bytes()[:8] == PNG


def test_lab_style_keeps_its_meaning() -> None:
    """Same method, same colour; +log-n dashed and hollow; *A dotted with the number as marker."""
    plain, log_n = lab_report._style("ntk"), lab_report._style("ntk+log-n")
    four, four_log_n = lab_report._style("ntk*4"), lab_report._style("ntk*4+log-n")
    assert plain["color"] == log_n["color"] == four["color"] == four_log_n["color"]
    assert plain["linestyle"] == "-" and log_n["linestyle"] == "--"
    assert log_n["markerfacecolor"] == "none" and log_n["marker"] == plain["marker"]
    assert four["linestyle"] == ":" and four["marker"] == "$4$"
    assert four_log_n["marker"] == "$4$" and four_log_n["linestyle"] != four["linestyle"]
    assert lab_report._style("ntk*2")["marker"] == "$2$"
    assert lab_report._style("pi")["color"] != plain["color"]


def test_lab_style_any_number_of_methods(tmp_path: Path) -> None:
    """The lab plot had exactly 10 colours zipped strictly with its methods: an 11th raised. Every method of
    the registry (14 today, more than the lab's 10) now gets its own style."""
    from ropelab.registry import REGISTRY

    names = [n for n, e in REGISTRY.items() if e.kind != "encoding"]
    assert len(names) > 10
    labels = [m for name in names for m in (name, f"{name}+log-n")]
    styles = [_key(lab_report._style(label)) for label in labels]
    assert len(set(styles)) == len(labels)
    names = list(lab_methods.METHODS)  # the lab's policy covers 10 of them: draw those
    labels = [m for name in names for m in (name, f"{name}+log-n")]
    path = lab_report.plot_lengths(_lab_records(labels), tmp_path / "lab.png", labels=labels)
    assert path.exists()
    ft = [
        {"experiment": "finetune", "method": name, "step": step, "loss": 3.0 - 0.1 * step, "length": 256}
        for name in names
        for step in (0, 5, 10)
    ]
    assert lab_report.plot_finetune(ft, tmp_path / "ft.png", reference={"NTK": 2.5}).exists()


# ------------------------------------------------------------------ heatmap
def test_heatmap_cell_labels_say_correct_over_trials() -> None:
    grid = {(512, 0.0): 0.7, (512, 0.5): 1.0, (1024, 0.0): 0.0}
    lengths, depths = [512, 1024], [0.0, 0.5]
    assert heatmap_cell_labels(grid, lengths, depths, 10) == [["7/10", "0/10"], ["10/10", "-"]]
    per_cell = {(512, 0.0): 10, (512, 0.5): 4, (1024, 0.0): 3}
    assert heatmap_cell_labels(grid, lengths, depths, per_cell) == [["7/10", "0/3"], ["4/4", "-"]]
    assert heatmap_cell_labels(grid, lengths, depths) == [["70%", "0%"], ["100%", "-"]]


def test_trials_caption() -> None:
    keys = [(512, 0.0), (1024, 0.0)]
    assert trials_caption(10, keys) == "n = 10 trials per cell"
    assert trials_caption({keys[0]: 5, keys[1]: 5}, keys) == "n = 5 trials per cell"
    assert trials_caption({keys[0]: 5, keys[1]: 10}, keys) == "n = 5-10 trials per cell"
    assert trials_caption(None, keys) == ""
    with pytest.raises(RopeConfigError, match="trials"):
        trials_caption(0, keys)


def test_text_colour_readable_on_the_cell() -> None:
    from matplotlib import colormaps

    cividis = colormaps["cividis"]
    assert text_colour(cividis(0.0)) == "white"  # dark blue end
    assert text_colour(cividis(1.0)) == "black"  # light yellow end
    assert text_colour((1.0, 1.0, 1.0, 1.0)) == "black" and text_colour((0.0, 0.0, 0.0)) == "white"


def test_heatmap_figure_colour_blind_safe_with_trial_count(tmp_path: Path) -> None:
    grid = {(L, d): a for L, a in ((512, 0.7), (1024, 0.1)) for d in (0.0, 0.5, 1.0)}
    grid[(1024, 1.0)] = math.nan
    fig = heatmap_figure(grid, title="passkey", trained_length=512, trials=10)
    ax = fig.axes[0]
    assert ax.images[0].get_cmap().name == "cividis"
    texts = {t.get_text(): t.get_color() for t in ax.texts}
    assert "7/10" in texts and "1/10" in texts and "-" in texts
    assert texts["7/10"] == "black" and texts["1/10"] == "white"  # light cell, dark cell
    assert "n = 10 trials per cell" in ax.get_title()
    # the old call, without trials, still works and writes a PNG
    path = plot_heatmap(grid, tmp_path / "hm.png", title="passkey", trained_length=512)
    assert path.read_bytes()[:8] == PNG
    assert plot_heatmap(grid, tmp_path / "hm10.png", title="passkey", trials=10).exists()
