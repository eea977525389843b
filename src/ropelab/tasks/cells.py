"""A cell of the tasks grid (a task at one length and depth), as every runner of it builds one: its seeded
prompts (:func:`cell_samples`), the unit its resume key covers (:func:`cell_unit`) and its stamped row
(:func:`cell_row`). :func:`ropelab.tasks.task_grid` (HF models) and :func:`ropelab.tasks.lab.lab_task_grid`
(the lab's byte-level models) differ in how they get the answers, not in what a cell is or what its row
holds: one definition here keeps their rows alike (``ropelab report`` renders both with one renderer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ropelab.registry import MethodSpec
from ropelab.report.provenance import corpus_identity, stamp
from ropelab.tasks.generators import Sample
from ropelab.tasks.table import Task
from ropelab.tasks.text import Frame, Haystack, Measure

#: the version of the prompt wording (generators' templates); bump it when a template changes
PROMPT_VERSION = 1
#: a prompt longer than this (characters) is kept in a row as its head and tail, with its hash
PROMPT_CHARS = 1500


def _int_seed(*parts: Any) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def cell_samples(
    task: Task,
    measure: Measure,
    haystack: Haystack,
    length: int,
    depth: float | None,
    trials: int,
    seed: int,
) -> list[Sample]:
    """The ``trials`` prompts of a cell: trial ``i`` seeded by ``(seed, task, length, depth, i)``, the
    layout (haystack start, needle places) by ``(seed, task, length, depth)``."""
    layout = _int_seed(seed, task.name, length, depth)
    return [
        task.generate(
            measure,
            length,
            depth,
            _int_seed(seed, task.name, length, depth, i),
            layout=layout,
            haystack=haystack,
        )
        for i in range(trials)
    ]


def shown_prompt(text: str) -> dict[str, Any]:
    """A prompt as a row keeps it: whole if short, else its head and tail and its length."""
    if len(text) <= PROMPT_CHARS:
        return {"text": text}
    half = PROMPT_CHARS // 2
    return {"head": text[:half], "tail": text[-half:], "chars": len(text)}


def haystack_identity(haystack: Haystack) -> dict[str, str]:
    """The "corpus" of a tasks run: the haystack's text and the prompt wording's version."""
    return corpus_identity(f"tasks:{haystack.name}", [haystack.text, f"prompt-version {PROMPT_VERSION}"])


def cell_unit(
    task: Task, length: int, depth: float | None, trials: int, seed: int, frame: Frame
) -> dict[str, Any]:
    """What a cell's resume key covers beyond the run context and the method (every setting that
    changes its numbers): the task and its options, the cell, the trials, the seed, the tokens generated
    and the chat frame."""
    return {
        "task": task.name,
        "options": task.options,
        "length": length,
        "depth": depth,
        "trials": trials,
        "seed": seed,
        "new_tokens": task.new_tokens,
        "frame": [frame.kind, frame.head, frame.mid],
    }


def cell_row(
    context: Mapping[str, Any],
    spec: MethodSpec,
    resolved: Mapping[str, Any],
    *,
    key: str,
    task: Task,
    metric: str,
    length: int,
    depth: float | None,
    seed: int,
    frame: Frame,
    haystack: Haystack,
    **numbers: Any,
) -> dict[str, Any]:
    """A cell's results row: :func:`~ropelab.report.provenance.stamp` of the run context and the method,
    then the cell's fields (key, task, metric, length, depth, seed, tokens generated, frame kind, haystack,
    prompt version), then ``numbers`` (trials, scores, predictions, timings, ...) in the caller's order."""
    return stamp(
        context,
        spec,
        resolved,
        key=key,
        task=task.name,
        metric=metric,
        length=length,
        depth=depth,
        seed=seed,
        new_tokens=task.new_tokens,
        frame=frame.kind,
        haystack=haystack.name,
        prompt_version=PROMPT_VERSION,
        **numbers,
    )
