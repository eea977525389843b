"""Tables, plots and the ``ropelab report`` section of ``tasks`` rows (no model needed).

- :func:`tasks_table`: Markdown, one row per (method, task) and a task-average row per method, one column
  per length: the mean score over depths and trials, ``n`` trials beside it; then, where the baseline
  (``none``) ran beside other methods, :func:`tasks_paired_table` under its heading;
- :func:`tasks_paired_table`: each method minus the baseline per (task, length) and task average, paired
  by trial (:mod:`ropelab.tasks.paired`), cells in ``eval --baseline``'s form
  (:meth:`ropelab.report.stats.PairedDifference.text`);
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

from ropelab.report.stats import MIN_UNITS
from ropelab.tasks.paired import AVERAGE, paired_task_scores
from ropelab.tasks.verdict import Row, effective_lengths, task_average, task_scores


def _rows(records: Iterable[Row]) -> list[Row]:
    return [r for r in records if r.get("command", "tasks") == "tasks" and r.get("scores") is not None]


def tasks_score_table(records: Iterable[Row]) -> str:
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


def paired_heading(baseline: str) -> str:
    """The paired table's heading (the wording of ``eval``'s, for scores and trials)."""
    return (
        f"Paired against {baseline} (method minus {baseline}, score; 95% paired bootstrap over the same n "
        f"trials, the same prompts for both; an interval without `not different` excludes 0; none below "
        f"{MIN_UNITS} trials; positive: a higher score than the baseline; average: the task average, every "
        "task weighing alike, over the (task, depth, trial) units):"
    )


def tasks_paired_table(records: Iterable[Row], baseline: str = "none") -> str:
    """Each method minus ``baseline`` per (task, length) and task average per length, paired by trial
    (:func:`ropelab.tasks.paired.paired_task_scores`): ``difference [low, high] n=N``, ``not different``
    where the interval holds 0, ``n=N (n<3)`` without an interval, ``no common trials`` where the two
    ran none alike. Then the cells where the two ran different trials (paired on the common ones only).
    Empty where ``baseline`` did not run beside another method."""
    from ropelab.report import format_table

    rows = _rows(records)
    cells = paired_task_scores(rows, baseline)
    if not cells:
        return ""
    lengths = sorted({c.length for c in cells})
    base_lengths = {int(r["length"]) for r in rows if str(r.get("label") or r.get("method")) == baseline}
    table: list[dict[str, Any]] = [
        {"method": baseline, "task": "all", **{str(n): "baseline" for n in lengths if n in base_lengths}}
    ]
    lines: dict[tuple[str, str], dict[str, Any]] = {}
    for c in cells:
        task = "**average**" if c.task == AVERAGE else c.task
        line = lines.setdefault((c.label, task), {"method": c.label, "task": task})
        line[str(c.length)] = c.paired.text() if c.paired is not None else "no common trials"
    # each method's tasks, then its average (cells come in that order per label)
    table += list(lines.values())
    text = format_table(table, ["method", "task", *(str(n) for n in lengths)], markdown=True)
    uneven = [
        f"- {c.label}, {c.task} at {c.length}: {0 if c.paired is None else c.paired.n} trials paired "
        f"({c.label} ran {c.trials}, {baseline} {c.baseline_trials})"
        for c in cells
        if c.task != AVERAGE and (c.paired is None or not c.trials == c.baseline_trials == c.paired.n)
    ]
    if uneven:
        head = "Paired on the trials both ran (another trial count, seed or prompt):"
        text += f"\n\n{head}\n\n" + "\n".join(uneven)
    return text


def tasks_table(records: Iterable[Row], *, baseline: str | None = "none") -> str:
    """:func:`tasks_score_table`, then :func:`tasks_paired_table` against ``baseline`` under
    :func:`paired_heading` where that baseline ran beside another method (None: no paired table)."""
    rows = _rows(records)
    text = tasks_score_table(rows)
    paired = tasks_paired_table(rows, baseline) if baseline is not None and rows else ""
    return f"{text}\n\n{paired_heading(str(baseline))}\n\n{paired}" if paired else text


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
        tasks_table(rows, baseline=_reference(rows)),
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
