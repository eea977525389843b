"""The effective context length of each method (RULER, Hsieh et al. 2024, section 4: "the maximum length
at which a model's performance exceeds a threshold").

RULER's threshold is the score of a reference model (Llama-2-7B at 4k, 85.6%). Here the reference is the
model itself: the task-average score of method ``none`` at its trained length (or, where the run did not
reach it, at the longest length tested within it, said so in the verdict); ``threshold`` overrides it.

A method's effective length is the longest tested length ``L`` such that the task-average score is at or
above the threshold at ``L`` and at every shorter tested length (a method that recovers after failing
does not count past the first failure). Task average: the mean over tasks of each task's mean score over
its depths and trials (RULER's average over its 13 tasks), only at lengths where every task was run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def trial_scores(row: Row) -> list[float]:
    """The per-trial scores of a cell in the task's metric (``all`` for every RULER synthetic task)."""
    return [float(x) for x in row["scores"][row.get("metric", "all")]]


def task_scores(rows: Iterable[Row]) -> dict[str, dict[str, dict[int, list[float]]]]:
    """label -> task -> length -> every trial's score (all depths pooled), the last row of a cell kept."""
    cells: dict[tuple[str, str, int, Any], Row] = {}
    for r in rows:
        if r.get("scores") is None:  # a cell the model could not run (its row says why, in ``error``)
            continue
        cells[(str(r.get("label") or r.get("method")), str(r["task"]), int(r["length"]), r.get("depth"))] = r
    out: dict[str, dict[str, dict[int, list[float]]]] = {}
    for (label, task, length, _), r in cells.items():
        out.setdefault(label, {}).setdefault(task, {}).setdefault(length, []).extend(trial_scores(r))
    return out


def task_average(rows: Iterable[Row]) -> dict[str, dict[int, float]]:
    """label -> length -> task-average score, at the lengths where every task of the label was run."""
    out: dict[str, dict[int, float]] = {}
    for label, tasks in task_scores(rows).items():
        lengths = set.intersection(*(set(by_length) for by_length in tasks.values()))
        out[label] = {n: _mean([_mean(tasks[t][n]) for t in tasks]) for n in sorted(lengths)}
    return out


@dataclass(frozen=True)
class Verdict:
    """One method's effective context length: ``None`` when it is below the threshold at the shortest
    length tested."""

    label: str
    effective_length: int | None
    threshold: float
    #: how the threshold was set, in words
    basis: str
    #: length -> task-average score
    scores: dict[int, float]

    def line(self) -> str:
        shown = ", ".join(f"{n}: {s:.3f}" for n, s in self.scores.items())
        if self.effective_length is None:
            verdict = f"below the threshold already at {min(self.scores)}"
        elif self.effective_length == max(self.scores):
            verdict = f">= {self.effective_length} (the longest length tested)"
        else:
            verdict = str(self.effective_length)
        return (
            f"{self.label}: effective context length {verdict} "
            f"(threshold {self.threshold:.3f}, {self.basis}; {shown})"
        )


def baseline(
    averages: Mapping[str, Mapping[int, float]], trained_length: int | None, reference: str = "none"
) -> tuple[float, str] | None:
    """(threshold, basis): ``reference``'s task average at the trained length, else at the longest
    length tested within it; None where the run has neither."""
    none = averages.get(reference) or {}
    within = [n for n in none if trained_length is None or n <= trained_length]
    if not within:
        return None
    at = max(within)
    if at == trained_length:
        return none[at], f"the model's own score ({reference}) at its trained length {at}"
    where = f"its trained length {trained_length}" if trained_length else "its trained length (unknown)"
    return none[at], f"the model's own score ({reference}) at {at}, the longest length tested within {where}"


def effective_lengths(
    rows: Iterable[Row],
    *,
    threshold: float | None = None,
    trained_length: int | None = None,
    reference: str | None = "none",
) -> tuple[list[Verdict], str]:
    """Every method's :class:`Verdict` and a note: empty, or why a method has no verdict (no baseline).

    ``reference``: the label whose score at the trained length is the threshold (``none``: the model as
    it is); None: each label is its own reference (the lab, where every label is another model)."""
    rows = list(rows)
    averages = task_average(rows)
    if trained_length is None:
        found = {r.get("trained_length") for r in rows} - {None}
        trained_length = found.pop() if len(found) == 1 else None
    verdicts, notes = [], []
    for label, scores in averages.items():
        if not scores:
            continue
        if threshold is not None:
            limit, basis = threshold, "given"
        else:
            who = label if reference is None else reference
            base = baseline(averages, trained_length, who)
            if base is None:
                notes.append(
                    f"{label}: no effective length: the threshold is {who}'s score at a length within the "
                    f"trained length {trained_length}; run it there or give a threshold"
                )
                continue
            limit, basis = base
            if limit <= 0:
                at = basis.split(" at ")[1].split(",")[0].removeprefix("its trained length ")
                notes.append(
                    f"{label}: no effective length: {who} scores 0 at {at} (the task is beyond the model "
                    "even at its trained length)"
                )
                continue
        passing = None
        for n in sorted(scores):
            if scores[n] < limit - 1e-12:
                break
            passing = n
        verdicts.append(Verdict(label, passing, limit, basis, dict(sorted(scores.items()))))
    return verdicts, "\n".join(notes)
