"""Tables, plots and the ``ropelab report`` section of ``tasks`` rows (no model needed).

- :func:`tasks_table`: Markdown, one row per (method, task) and a task-average row per method, one column
  per length: the mean score over depths and trials, ``n`` trials beside it;
- :func:`tasks_plots`: ``tasks_score.png`` (task average vs length, one line per method, the threshold
  and the trained length marked) and ``tasks_LABEL.png`` (task x length heatmap per method);
- :func:`render_tasks`: both, with the effective-length verdicts (:mod:`ropelab.tasks.verdict`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ropelab.tasks.verdict import Row, effective_lengths, task_average, task_scores


def _rows(records: Iterable[Row]) -> list[Row]:
    return [r for r in records if r.get("command", "tasks") == "tasks" and r.get("scores") is not None]


def tasks_table(records: Iterable[Row]) -> str:
    """Mean score (RULER's ``all``) per method, task and length, over depths and trials (``n`` trials)."""
    from ropelab.report import format_table

    rows = _rows(records)
    if not rows:
        return "(no tasks rows)"
    scores, averages = task_scores(rows), task_average(rows)
    lengths = sorted({int(r["length"]) for r in rows})
    table: list[dict[str, Any]] = []
    for label, tasks in scores.items():
        for task, by_length in tasks.items():
            line: dict[str, Any] = {"method": label, "task": task}
            for n, xs in by_length.items():
                line[str(n)] = f"{sum(xs) / len(xs):.2f} (n={len(xs)})"
            table.append(line)
        avg = {str(n): f"{s:.3f}" for n, s in averages.get(label, {}).items()}
        table.append({"method": label, "task": "**average**", **avg})
    return format_table(table, ["method", "task", *(str(n) for n in lengths)], markdown=True)


def _file_part(label: str) -> str:
    return re.sub(r"[^\w.=,()+-]+", "_", label)


def tasks_plots(
    records: Iterable[Row],
    out: str | Path,
    *,
    title: str = "",
    threshold: float | None = None,
    reference: str | None = "none",
) -> list[Path]:
    """``OUT/tasks_score.png`` and one ``OUT/tasks_LABEL.png`` heatmap per method (see the module doc)."""
    from ropelab.report.plots import legend_outside, pyplot, save_figure, series_styles

    rows = _rows(records)
    if not rows:
        return []
    plt = pyplot()
    verdicts, _ = effective_lengths(rows, threshold=threshold, reference=reference)
    trained = {r.get("trained_length") for r in rows} - {None}
    averages = task_average(rows)
    styles = series_styles(list(averages))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in averages.items():
        if points:
            ax.plot(list(points), list(points.values()), label=label, **styles[label])
    if verdicts and len({v.threshold for v in verdicts}) == 1:
        ax.axhline(verdicts[0].threshold, color="black", lw=1, ls=":", label="threshold")
    if len(trained) == 1:
        t = trained.pop()
        ax.axvline(t, color="grey", ls="--", lw=1, label=f"trained length {t}")
    ax.set(xlabel="prompt length (tokens)", ylabel="task-average score", ylim=(-0.03, 1.03))
    ax.set_title(f"{title + ': ' if title else ''}long-context tasks")
    ax.set_xscale("log", base=2)
    ax.grid(True, which="both", alpha=0.3)
    legend_outside(fig, ax)
    paths = [save_figure(fig, Path(out) / "tasks_score.png")]
    for label, tasks in task_scores(rows).items():
        lengths = sorted({n for by_length in tasks.values() for n in by_length})
        names = list(tasks)
        data = [[_mean_or_nan(tasks[t].get(n)) for n in lengths] for t in names]
        fig, ax = plt.subplots(figsize=(1.1 * len(lengths) + 3, 0.45 * len(names) + 1.8))
        im = ax.imshow(data, vmin=0, vmax=1, cmap="cividis", aspect="auto")
        for i, line in enumerate(data):
            for j, v in enumerate(line):
                n = len(tasks[names[i]].get(lengths[j], []))
                text = "" if v != v else f"{v:.2f}\n(n={n})"
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black"
                )
        ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
        ax.set_yticks(range(len(names)), names)
        ax.set(xlabel="prompt length (tokens)", title=f"{title + ' ' if title else ''}tasks, {label}")
        fig.colorbar(im, ax=ax, label="score (RULER all)")
        paths.append(save_figure(fig, Path(out) / f"tasks_{_file_part(label)}.png"))
    return paths


def _mean_or_nan(xs: Sequence[float] | None) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _reference(rows: Sequence[Row]) -> str | None:
    """``none`` (the model as it is), or None for lab rows (``model`` ``lab:...``): each lab model is
    its own reference."""
    return None if rows and all(str(r.get("model", "")).startswith("lab:") for r in rows) else "none"


def tasks_text(records: Iterable[Row], *, threshold: float | None = None) -> str:
    """The Markdown of a tasks run: the verdicts, the table, the cells a model could not run."""
    records = list(records)
    failed = sorted(
        {
            f"- {r.get('label')} {r.get('task')} at {r.get('length')}: {r['error']}"
            for r in records
            if r.get("error")
        }
    )
    rows = _rows(records)
    verdicts, note = effective_lengths(rows, threshold=threshold, reference=_reference(rows))
    frames = sorted({str(r.get("frame")) for r in rows})
    trained = sorted({r.get("trained_length") for r in rows} - {None})
    lines = [
        "# long-context tasks",
        "",
        f"Prompt frame: {', '.join(frames)} (chat: the tokenizer's chat template; plain: a base model's "
        f"text). Trained length: {', '.join(map(str, trained)) or 'unknown'}. Score: RULER's `all` "
        "(fraction of the answers found in the generation), mean over depths and trials.",
        "",
        "Effective context length (task average at or above the threshold at every length up to it):",
        "",
        *(f"- {v.line()}" for v in verdicts),
        *(f"- {line}" for line in note.splitlines()),
        "",
        tasks_table(rows),
        "",
        *(["Cells the model could not run:", "", *failed, ""] if failed else []),
    ]
    return "\n".join(lines)


def render_tasks(rows: Sequence[Row], out: Path | None) -> Any:
    """``ropelab report``'s section for ``tasks`` rows (:class:`ropelab.evaluate.Section`)."""
    from ropelab.evaluate import Section

    rows = _rows(rows)
    drawn = tasks_plots(rows, out, reference=_reference(rows)) if out is not None else []
    return Section("tasks", tasks_text(rows), drawn)
