"""The one table of task names: name -> generator, options, metric, tokens to generate.

``niah-*`` follow RULER's niah_single / multikey / multivalue / multiquery (4 needles where several);
``vt``, ``cwe``, ``fwe`` its variable tracking, common and frequent words extraction. ``lab-*``: the
tasks that fit the lab's byte-level models (short digit strings, few tokens to generate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ropelab.errors import RopeConfigError, did_you_mean
from ropelab.tasks.generators import Sample, common_words, frequent_words, niah, variable_tracking


@dataclass(frozen=True)
class Task:
    """A named task: its generator with fixed options, the metric and how many tokens to generate."""

    name: str
    generator: Callable[..., Sample]
    doc: str
    options: dict[str, Any] = field(default_factory=dict)
    #: tokens generated per trial (enough for every answer with the model's tokenizer or bytes)
    new_tokens: int = 32
    #: False for the aggregation tasks: the whole context is the list (one "depth", None)
    uses_depth: bool = True
    metric: str = "all"

    def generate(self, tokens: Any, length: int, depth: float | None, seed: int, **kw: Any) -> Sample:
        return self.generator(tokens, length, depth, seed, task=self.name, **{**self.options, **kw})


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("niah-single", niah, "one needle: a word key, a 7-digit value (the passkey's task)", {}, 16),
        Task("niah-words", niah, "one needle: a word key, a made-up word value", {"value": "word"}, 16),
        Task("niah-uuid", niah, "one needle: a word key, a UUID value", {"value": "uuid"}, 40),
        Task("niah-multikey", niah, "4 needles of 4 keys, one asked", {"keys": 4}, 16),
        Task("niah-multivalue", niah, "4 values of one key, all asked", {"values": 4}, 48),
        Task("niah-multiquery", niah, "4 needles of 4 keys, all asked", {"keys": 4, "queries": 4}, 48),
        Task("vt", variable_tracking, "2 chains of 4 hops, every name of one asked", {}, 40),
        Task("cwe", common_words, "the 10 most common words of a numbered list", {}, 80, False),
        Task("fwe", frequent_words, "the 3 most frequent Zipf-drawn coded words", {}, 32, False),
        # byte-level lab models (trained on Python source): code-like lines, short digit strings
        Task(
            "lab-niah",
            niah,
            "one line `name = 4-digit number` in the haystack; prompt ends `name = `",
            {"digits": 4, "style": "code"},
            6,
        ),
        Task(
            "lab-vt",
            variable_tracking,
            "a chain `A = 123`, `B = A`, `C = B` and a distractor chain; prompt ends `assert C == `",
            {"chains": 2, "hops": 2, "digits": 3, "style": "code"},
            5,
        ),
    )
}
#: what ``ropelab tasks`` runs by default (the RULER synthetic set)
DEFAULT_TASKS = ("niah-single", "niah-multikey", "niah-multivalue", "niah-multiquery", "vt", "cwe", "fwe")
#: the tasks for the lab's byte-level models
LAB_TASKS = ("lab-niah", "lab-vt")


def get_task(name: str | Task) -> Task:
    if isinstance(name, Task):
        return name
    key = name.strip().lower()
    if key not in TASKS:
        raise RopeConfigError(
            f"unknown task {name!r}{did_you_mean(key, TASKS)}; the tasks are {', '.join(TASKS)}"
        )
    return TASKS[key]


def parse_tasks(tasks: str | Task | Iterable[str | Task]) -> list[Task]:
    """``"niah-single,vt"`` or a list of names / :class:`Task` -> tasks (repeats dropped), each checked."""
    items = tasks.split(",") if isinstance(tasks, str) else [tasks] if isinstance(tasks, Task) else tasks
    out = {t.name: t for t in (get_task(x) for x in items if not isinstance(x, str) or x.strip())}
    if not out:
        raise RopeConfigError("no task given; the tasks are " + ", ".join(TASKS))
    return list(out.values())
