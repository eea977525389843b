"""Task scores paired by trial: each method minus a baseline (default ``none``, the model as it is), with
the paired bootstrap of :mod:`ropelab.report.stats` (Koehn 2004's paired resampling; ``eval --baseline``
pairs documents the same way).

**A trial** is one generated prompt. Trial ``i`` of the cell (task, length, depth) is generated from
``(seed, task, length, depth, i)`` whatever the method (:func:`ropelab.tasks.grid.cell_samples`), so a
trial is identified by ``(task, length, depth, seed, i)``, ``i`` its place in the row's ``scores``. Where
both rows keep the prompts' hashes (``prompt_sha256``), those must agree too: rows of another haystack,
chat frame, prompt version or tokenizer hold other prompts under the same identity, and are not paired.

**Per (task, length)**: the units are the trials of every depth that both the method and the baseline
ran; the statistic is the method's mean score minus the baseline's over them
(:func:`~ropelab.report.stats.paired_bootstrap_scores`), ``n`` the number of units.

**Task average at a length L**: the units are all the (task, depth, seed, i) trials of the tasks at L
that both ran, pooled; unit ``u`` of task ``t`` weighs ``w_u = 1 / n_t`` (``n_t``: the paired trials of
``t`` at L), so the statistic ``sum(w (a - b)) / sum(w)`` is exactly the method's task average (each
task's mean, averaged over tasks, as in :func:`ropelab.tasks.verdict.task_average`) minus the
baseline's. The bootstrap resamples the pooled units with replacement, the same indices for both methods
(:func:`~ropelab.report.stats.paired_bootstrap` with sums ``w * score`` and weights ``w``); ``n`` is the
number of pooled units. There is a paired average at L only where every task that either method ran (at
any length) has paired trials at L, as the unpaired average needs every task.

**Different trial sets** (another ``--trials``, ``--seed`` or prompt): the methods are paired on the
trials both ran, and only on those; ``n`` says how many, and :attr:`PairedCell.trials` /
:attr:`PairedCell.baseline_trials` how many each ran (the report lists the cells where they differ). A
cell with no trial in common has no difference (``paired`` is None), never one of unpaired means.

Below :data:`~ropelab.report.stats.MIN_UNITS` units there is no interval (``low = high = None``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ropelab.report.stats import PairedDifference, paired_bootstrap, paired_bootstrap_scores
from ropelab.tasks.verdict import Row, trial_scores

#: the ``task`` of a :class:`PairedCell` over the task average
AVERAGE = "average"

#: (depth, seed, index): a trial of one (task, length) cell
TrialId = tuple[Any, Any, int]


@dataclass(frozen=True)
class PairedCell:
    """``label`` minus ``baseline`` at ``length`` on ``task`` (or :data:`AVERAGE`), paired by trial.

    ``paired``: None where the two share no trial. ``trials`` / ``baseline_trials``: the trials each ran
    in the cell (for the average: summed over its tasks)."""

    label: str
    baseline: str
    task: str
    length: int
    paired: PairedDifference | None
    trials: int
    baseline_trials: int


def _label(row: Row) -> str:
    return str(row.get("label") or row.get("method"))


def trial_units(rows: Iterable[Row]) -> dict[str, dict[tuple[str, int], dict[TrialId, tuple[float, Any]]]]:
    """label -> (task, length) -> trial -> (score, the prompt's hash or None), every depth of the cell
    pooled; a cell (label, task, length, depth) written twice: its last row, as in the score tables."""
    cells: dict[tuple[str, str, int, Any], Row] = {}
    for r in rows:
        if r.get("scores") is None:  # a cell the model could not run
            continue
        cells[(_label(r), str(r["task"]), int(r["length"]), r.get("depth"))] = r
    out: dict[str, dict[tuple[str, int], dict[TrialId, tuple[float, Any]]]] = {}
    for (label, task, length, depth), r in cells.items():
        hashes = r.get("prompt_sha256") or []
        units = out.setdefault(label, {}).setdefault((task, length), {})
        for i, s in enumerate(trial_scores(r)):
            units[(depth, r.get("seed"), i)] = (s, hashes[i] if i < len(hashes) else None)
    return out


def _order(trial: TrialId) -> tuple[float, str, int]:
    depth, seed, i = trial
    return (-1.0 if depth is None else float(depth), str(seed), i)


def common_trials(
    a: dict[TrialId, tuple[float, Any]], b: dict[TrialId, tuple[float, Any]]
) -> list[tuple[float, float]]:
    """(a's score, b's score) of every trial both ran (same identity and, where both kept it, the same
    prompt hash), in a fixed order (depth, seed, index)."""
    pairs = []
    for trial in sorted(a.keys() & b.keys(), key=_order):
        (sa, ha), (sb, hb) = a[trial], b[trial]
        if ha is None or hb is None or ha == hb:
            pairs.append((sa, sb))
    return pairs


def paired_task_scores(
    rows: Iterable[Row],
    baseline: str = "none",
    *,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> list[PairedCell]:
    """Every label other than ``baseline``, each (task, length) cell and the task average per length,
    minus ``baseline`` paired by trial (see the module doc); empty where ``baseline`` has no rows.
    Order: labels as the rows first name them, tasks likewise, lengths ascending, the average last."""
    units = trial_units(rows)
    base = units.get(baseline)
    if not base:
        return []
    boot = {"resamples": resamples, "seed": seed, "level": level}
    out: list[PairedCell] = []
    for label, cells in units.items():
        if label == baseline:
            continue
        tasks = list(dict.fromkeys(t for t, _ in [*cells, *base]))
        lengths = sorted({n for _, n in [*cells, *base]})
        for task in tasks:
            for n in lengths:
                a, b = cells.get((task, n), {}), base.get((task, n), {})
                if not a:
                    continue
                pairs = common_trials(a, b)
                diff = (
                    paired_bootstrap_scores([x for x, _ in pairs], [y for _, y in pairs], **boot)
                    if pairs
                    else None
                )
                out.append(PairedCell(label, baseline, task, n, diff, len(a), len(b)))
        for n in lengths:
            per_task = {t: common_trials(cells.get((t, n), {}), base.get((t, n), {})) for t in tasks}
            if not all(per_task.values()):
                continue
            a_sum, b_sum, weight = [], [], []
            for pairs in per_task.values():
                w = 1.0 / len(pairs)
                a_sum += [w * x for x, _ in pairs]
                b_sum += [w * y for _, y in pairs]
                weight += [w] * len(pairs)
            diff = paired_bootstrap(a_sum, weight, b_sum, weight, **boot)
            ran = sum(len(cells.get((t, n), {})) for t in tasks)
            ran_base = sum(len(base.get((t, n), {})) for t in tasks)
            out.append(PairedCell(label, baseline, AVERAGE, n, diff, ran, ran_base))
    return out
