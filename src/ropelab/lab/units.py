"""The lab's resumable pieces of work and the loop that runs the ones not done yet.

A :class:`Unit` (train one model; evaluate one model with one method at every length; fine-tune with
one method) names the row keys it produces (:mod:`ropelab.lab.records`); it is done when every one of
them is in ``results.jsonl``. Keys are computed when asked: a unit whose checkpoint does not exist
yet (``--train``, before its model is trained) is not done and has no keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Unit:
    """One resumable piece of work: its row keys (None: cannot be known yet), a cost, how to run it."""

    name: str
    keys: Callable[[], list[str] | None]
    weight: int
    run: Callable[[], None]

    def is_done(self, rows: Mapping[str, Any]) -> bool:
        keys = self.keys()
        return keys is not None and all(k in rows for k in keys)


@dataclass
class LabOutcome:
    """What one call of :meth:`ropelab.lab.Lab.run` did: the rows of the plan and the units run/skipped."""

    out: Path
    records: list[dict[str, Any]]
    units_run: list[str] = field(default_factory=list)
    units_skipped: list[str] = field(default_factory=list)
    complete: bool = True
    seconds: float = 0.0


def run_units(
    units: list[Unit], rows: Mapping[str, Any], outcome: LabOutcome, *, bar: Any, max_units: int | None
) -> None:
    """Run every unit of ``units`` not done in ``rows`` (which the units' runs fill), in order.

    Stops after ``max_units`` units, or at the first unit that ran without finishing (a fine-tuning
    curve stopped early); ``outcome`` records what ran and whether everything is done.
    """
    done = [u.is_done(rows) for u in units]
    todo = [u for u, d in zip(units, done, strict=True) if not d]
    outcome.units_skipped = [u.name for u, d in zip(units, done, strict=True) if d]
    for i, unit in enumerate(todo):
        if max_units is not None and i >= max_units:
            outcome.complete = False
            break
        if bar is not None:
            bar.set_description(unit.name)
        before = getattr(bar, "n", 0)
        unit.run()
        if not unit.is_done(rows):
            outcome.complete = False
            break
        if bar is not None:
            bar.update(max(0, before + unit.weight - getattr(bar, "n", 0)))
        outcome.units_run.append(unit.name)


def plan_rows(units: list[Unit], rows: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``rows`` that the plan's units produce (rows of other settings left out)."""
    wanted = {k for u in units for k in (u.keys() or [])}
    return [r for k, r in rows.items() if k in wanted]
