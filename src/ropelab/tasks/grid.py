"""``ropelab tasks`` as one call: :func:`task_grid` (methods x tasks x lengths x depths x trials).

For each cell (method, task, length, depth) the trials' prompts come from the task's generator
(:mod:`ropelab.tasks.generators`), seeded by ``(seed, task, length, depth, trial)`` (the same prompts for
every method: results pair by trial). Everything before the first needle is the same for the trials of a
cell: its KV cache is computed once (:func:`ropelab.evaluate.prefix_cache`) and copied per trial, then
greedy decoding (:func:`ropelab.evaluate.greedy_continue_batch`, trials of one token length batched). A
chat model (a tokenizer with a ``chat_template``) gets the prompt as one user message and the answer
prefix opening the assistant's turn; a base model a plain prompt; rows say which (``frame``).

Each cell is one row of ``OUT/results.jsonl``, stamped (:func:`ropelab.report.provenance.stamp`) and keyed
(:func:`~ropelab.report.provenance.resume_key`) by the run context, the method, the task, its options and
the cell; a rerun computes only the cells not there. A row keeps every trial: answers, prediction, the
three scores (:mod:`ropelab.tasks.scoring`), token count and a hash of the prompt, and trial 0's prompt
text (whole if short, else its head and tail), so paired statistics can be computed later. Under
``torchrun --nproc_per_node=K`` the cells (method x task x length x depth) are split over the ranks, each
with the model on its own device, as ``ropelab passkey`` splits its cells (:mod:`ropelab.evaluate.shard`):
the rows, their keys and the records every rank returns are those of one process, and a run stopped with
any number of processes resumes with any other.

>>> run = task_grid("smollm2", methods="none,yarn", factors=[2], tasks="niah-single,vt",
...                 lengths=[1024, 2048], depths=[0.5], trials=4, out="runs/tasks")  # doctest: +SKIP
>>> print(run.text())                                                                # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ropelab.errors import RopeConfigError
from ropelab.evaluate import (
    LoadedModel,
    batches,
    expand_methods,
    greedy_continue_batch,
    job_lock,
    open_model,
    prefix_cache,
    run_cells,
    shared_context,
)
from ropelab.hf import Extension
from ropelab.registry import MethodSpec
from ropelab.report.provenance import resume_key
from ropelab.tasks.cells import cell_row, cell_samples, cell_unit, haystack_identity, shown_prompt
from ropelab.tasks.generators import Sample
from ropelab.tasks.report import tasks_plots, tasks_table
from ropelab.tasks.scoring import METRICS, score
from ropelab.tasks.table import DEFAULT_TASKS, Task, parse_tasks
from ropelab.tasks.text import Frame, Haystack, Measure, corpus_haystack, frame_for, token_counter
from ropelab.tasks.verdict import Verdict, effective_lengths
from ropelab.train.distributed import Dist


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _prediction(tokenizer: Any, tokens: list[int]) -> str:
    """The generated text up to the first end-of-sequence token (special tokens dropped)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    stops = set(eos if isinstance(eos, list) else [eos]) - {None}
    cut = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
    return tokenizer.decode(tokens[:cut], skip_special_tokens=True)


def run_cell(
    model: Any,
    tokenizer: Any,
    samples: Sequence[Sample],
    frame: Frame,
    new_tokens: int,
    *,
    batch_size: int = 1,
) -> dict[str, Any]:
    """Greedy answers to ``samples`` (one cell), the prefix cache shared by the trials whose prefix is the
    same (all of a cell, bar a trial whose needles did not fit after it); per-trial results."""
    measure = Measure(lambda _: 0, frame)
    parts = [measure.parts(s.prefix, s.rest, s.answer_prefix) for s in samples]
    prefixes = [_encode(tokenizer, a) for a, _ in parts]
    rests = [_encode(tokenizer, b) for _, b in parts]
    generated: list[list[int]] = [[] for _ in samples]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prefixes):
        groups.setdefault(tuple(p), []).append(i)
    for prefix, members in groups.items():
        cache = prefix_cache(model, list(prefix))
        for batch in batches([rests[i] for i in members], batch_size):
            chosen = [members[j] for j in batch]
            outs = greedy_continue_batch(model, cache, len(prefix), [rests[i] for i in chosen], new_tokens)
            for i, out in zip(chosen, outs, strict=True):
                generated[i] = out
    predictions = [_prediction(tokenizer, g) for g in generated]
    per_trial = [score(p, s.answers) for p, s in zip(predictions, samples, strict=True)]
    metric = samples[0].metric
    full = [a + b for a, b in parts]
    return {
        "trials": len(samples),
        "score": sum(t[metric] for t in per_trial) / len(per_trial),
        "scores": {m: [t[m] for t in per_trial] for m in METRICS},
        "answers": [list(s.answers) for s in samples],
        "predictions": predictions,
        "prompt_tokens": [len(p) + len(r) for p, r in zip(prefixes, rests, strict=True)],
        "shared_prefix_tokens": len(prefixes[0]),
        "prefix_groups": len(groups),
        "prompt_sha256": [hashlib.sha256(t.encode()).hexdigest()[:16] for t in full],
        "prompt": shown_prompt(full[0]),
        "options": samples[0].options,
    }


@dataclass
class TasksRun:
    """What :func:`task_grid` did: one stamped row per cell, the table, the verdicts and the plots."""

    records: list[dict[str, Any]]
    table: str
    verdicts: list[Verdict]
    out: Path
    plots: list[Path] = field(default_factory=list)
    threshold: float | None = None
    note: str = ""
    #: this process's rank of ``world`` under ``torchrun`` (every rank returns the same records)
    rank: int = 0
    world: int = 1

    def text(self) -> str:
        """What ``ropelab tasks`` prints: the plots, the verdict lines, the table, the results file (under
        ``torchrun``: rank 0; the other ranks one line)."""
        if self.rank:
            return f"rank {self.rank} of {self.world}: done; rank 0 prints the table"
        return "\n".join(
            [
                *(f"plot: {p}" for p in self.plots),
                "",
                *(v.line() for v in self.verdicts),
                *self.note.splitlines(),
                "",
                self.table,
                *sorted(
                    {
                        f"{r.get('label')} {r.get('task')} at {r.get('length')}: {r['error']}"
                        for r in self.records
                        if r.get("error")
                    }
                ),
                f"results: {self.out / 'results.jsonl'}",
            ]
        )


def task_grid(
    model: Any,
    tokenizer: Any = None,
    methods: str | MethodSpec | Iterable[str | MethodSpec] = "none",
    *,
    tasks: str | Iterable[str | Task] = DEFAULT_TASKS,
    factors: Sequence[float] = (),
    log_n: bool = False,
    window: int | None = None,
    leak: float | None = None,
    group: int | None = None,
    lengths: Sequence[int] = (1024, 2048, 4096),
    depths: Sequence[float] = (0.0, 0.5, 1.0),
    trials: int = 10,
    seed: int = 0,
    haystack: str | Haystack = "filler",
    chat: bool | None = None,
    threshold: float | None = None,
    out: str | Path = "out/tasks",
    model_name: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    threads: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
    plots: bool = True,
    log: Any = None,
) -> TasksRun:
    """Every task of ``tasks`` for every method at every length and depth (see the module doc).

    ``model``, ``tokenizer``, ``methods`` and the method options as :func:`ropelab.evaluate.passkey_grid`.
    ``haystack``: ``filler`` (default), ``stdlib``, a file, a folder or ``hf:NAME`` (:func:`ropelab.data.
    load_corpus`), or a :class:`Haystack`. ``chat``: None = the chat template where the tokenizer has one.
    ``threshold``: the effective-length threshold (default: method none's score at the trained length).
    The aggregation tasks (common / frequent words) have no depth: one cell per length. Under ``torchrun``
    every rank returns the same records; rank 0 holds ``out``, draws the plots and prints the table.
    """
    if trials < 1:
        raise RopeConfigError(f"trials must be >= 1 (--trials), got {trials}")
    if batch_size < 1:
        raise RopeConfigError(f"batch_size (--batch-size) must be >= 1, got {batch_size}")
    if not depths or any(not 0 <= d <= 1 for d in depths):
        raise RopeConfigError(f"depths must lie in [0, 1] (--depths), got {list(depths)}")
    if not lengths:
        raise RopeConfigError("give at least one length")
    if threshold is not None and not 0 <= threshold <= 1:
        raise RopeConfigError(f"threshold must lie in [0, 1] (--threshold), got {threshold}")
    chosen = parse_tasks(tasks)
    specs = expand_methods(methods, factors, log_n=log_n, window=window, leak=leak, group=group)
    hay = haystack if isinstance(haystack, Haystack) else corpus_haystack(haystack)
    d, loaded, _ = open_model(
        model, tokenizer, name=model_name, dtype=dtype, device=device, threads=threads, log=log
    )
    extensions = loaded.extensions(specs)
    frame = frame_for(loaded.tokenizer, chat)
    measure = Measure(token_counter(loaded.tokenizer), frame)
    for task in chosen:  # every prompt fits its length, before the first cell runs
        for length in lengths:
            task.generate(measure, length, 0.0 if task.uses_depth else None, 0, haystack=hay)
    context = loaded.run_context("tasks", haystack_identity(hay), threads)
    context = shared_context(context, d)  # under torchrun: rank 0's, so rows are one process's
    cells = [
        _Cell(
            spec,
            task,
            length,
            depth,
            resume_key(context, spec, **cell_unit(task, length, depth, trials, seed, frame)),
        )
        for spec in specs
        for task in chosen
        for length in lengths
        for depth in (depths if task.uses_depth else [None])
    ]
    out = Path(out)
    with job_lock(out, d):  # one job per folder: two would write every cell twice
        records = _grid(
            loaded,
            cells,
            extensions,
            context,
            measure=measure,
            hay=hay,
            frame=frame,
            trials=trials,
            seed=seed,
            batch_size=batch_size,
            result_file=out / "results.jsonl",
            progress=progress,
            d=d,
        )
    verdicts, note = effective_lengths(records, threshold=threshold, trained_length=loaded.trained_length)
    drawn = tasks_plots(records, out, title=loaded.name, threshold=threshold) if plots and d.main else []
    return TasksRun(records, tasks_table(records), verdicts, out, drawn, threshold, note, d.rank, d.world)


class _Cell(NamedTuple):
    """One unit of the grid: a method on a task at one length and depth, with its resume key."""

    spec: MethodSpec
    task: Task
    length: int
    depth: float | None
    key: str


def _grid(
    loaded: LoadedModel,
    cells: Sequence[_Cell],
    extensions: dict[str, Extension],
    context: dict[str, Any],
    *,
    measure: Measure,
    hay: Haystack,
    frame: Frame,
    trials: int,
    seed: int,
    batch_size: int,
    result_file: Path,
    progress: bool,
    d: Dist,
) -> list[dict[str, Any]]:
    """Every cell's row, in the order of ``cells``, on every rank; this rank computes its share of the
    cells not in ``result_file`` (:func:`ropelab.evaluate.run_cells`) and appends their rows."""

    def compute(cell: _Cell, ext: Extension) -> dict[str, Any]:
        t0 = time.perf_counter()
        samples = cell_samples(cell.task, measure, hay, cell.length, cell.depth, trials, seed)
        found = run_cell(
            loaded.model, loaded.tokenizer, samples, frame, cell.task.new_tokens, batch_size=batch_size
        )
        return cell_row(
            context,
            cell.spec,
            ext.resolved(),
            key=cell.key,
            task=cell.task,
            metric=samples[0].metric,
            length=cell.length,
            depth=cell.depth,
            seed=seed,
            frame=frame,
            haystack=hay,
            seconds=time.perf_counter() - t0,
            batch_size=batch_size,
            **found,
        )

    def postfix(cell: _Cell) -> str:
        depth = "" if cell.depth is None else f" d={cell.depth:g}"
        return f"{cell.spec.label} {cell.task.name} L={cell.length}{depth}"

    return run_cells(
        cells,
        compute,
        result_file,
        d,
        model=loaded.model,
        extensions=extensions,
        command="tasks",
        progress=progress,
        postfix=postfix,
    )
