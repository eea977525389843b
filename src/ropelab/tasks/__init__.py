"""Long-context tasks in the style of RULER (Hsieh et al. 2024): offline, seeded, over any haystack.

- :mod:`~ropelab.tasks.generators`: needle retrieval (single, multi-key, multi-value, multi-query; keys and
  values as numbers, made-up words or UUIDs), variable tracking, common and frequent words extraction;
  each a pure function returning a :class:`Sample` (prompt parts, answers, distractors, token count).
- :mod:`~ropelab.tasks.scoring`: RULER's ``all`` / ``part`` metrics and the strict ``exact``.
- :data:`TASKS`: the one table of task names (:func:`parse_tasks` refuses a typo with "did you mean").
- :func:`task_grid` (``ropelab tasks``): methods x tasks x lengths x depths x trials on a model, resumable,
  one row per cell with every trial; :func:`effective_lengths` (the verdict per method);
  :func:`render_tasks` (``ropelab report``), :func:`tasks_table`, :func:`tasks_plots` from rows alone;
  :func:`paired_task_scores` / :func:`tasks_paired_table`: each method minus ``none`` paired by trial.
- :mod:`~ropelab.tasks.lab`: the byte-level tasks on the lab's tiny models.
"""

from ropelab.tasks.generators import Sample, common_words, frequent_words, niah, variable_tracking
from ropelab.tasks.grid import TasksRun, task_grid
from ropelab.tasks.paired import PairedCell, paired_task_scores
from ropelab.tasks.report import render_tasks, tasks_paired_table, tasks_plots, tasks_table, tasks_text
from ropelab.tasks.scoring import METRICS, score
from ropelab.tasks.table import DEFAULT_TASKS, LAB_TASKS, TASKS, Task, get_task, parse_tasks
from ropelab.tasks.text import Frame, Haystack, Measure, chat_frame, corpus_haystack, default_haystack
from ropelab.tasks.verdict import Verdict, effective_lengths, task_average

__all__ = [
    "DEFAULT_TASKS",
    "LAB_TASKS",
    "METRICS",
    "TASKS",
    "Frame",
    "Haystack",
    "Measure",
    "PairedCell",
    "Sample",
    "Task",
    "TasksRun",
    "Verdict",
    "chat_frame",
    "common_words",
    "corpus_haystack",
    "default_haystack",
    "effective_lengths",
    "frequent_words",
    "get_task",
    "niah",
    "paired_task_scores",
    "parse_tasks",
    "render_tasks",
    "score",
    "task_average",
    "task_grid",
    "tasks_paired_table",
    "tasks_plots",
    "tasks_table",
    "tasks_text",
    "variable_tracking",
]
