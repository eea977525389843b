"""Long-context tasks in the style of RULER (Hsieh et al. 2024): offline, seeded, over any haystack.

- :mod:`~ropelab.tasks.generators`: needle retrieval (single, multi-key, multi-value, multi-query; keys and
  values as numbers, made-up words or UUIDs), variable tracking, common and frequent words extraction;
  each a pure function returning a :class:`Sample` (prompt parts, answers, distractors, token count).
- :mod:`~ropelab.tasks.scoring`: RULER's ``all`` / ``part`` metrics and the strict ``exact``.
- :data:`TASKS`: the one table of task names (:func:`parse_tasks` refuses a typo with "did you mean").
"""

from ropelab.tasks.generators import Sample, common_words, frequent_words, niah, variable_tracking
from ropelab.tasks.scoring import METRICS, score
from ropelab.tasks.table import DEFAULT_TASKS, LAB_TASKS, TASKS, Task, get_task, parse_tasks
from ropelab.tasks.text import Frame, Haystack, Measure, chat_frame, corpus_haystack, default_haystack

__all__ = [
    "DEFAULT_TASKS",
    "LAB_TASKS",
    "METRICS",
    "TASKS",
    "Frame",
    "Haystack",
    "Measure",
    "Sample",
    "Task",
    "chat_frame",
    "common_words",
    "corpus_haystack",
    "default_haystack",
    "frequent_words",
    "get_task",
    "niah",
    "parse_tasks",
    "score",
    "variable_tracking",
]
