"""``ropelab passkey`` as one call: :func:`passkey_grid` (retrieval over length x depth, per method).

Each cell (method, length, depth) is appended to ``OUT/results.jsonl`` as it finishes, stamped with
:func:`ropelab.report.provenance.stamp` and keyed by :func:`~ropelab.report.provenance.resume_key` over the
run context (model files, dtype, device, versions, the prompt text), the method and the cell (length,
depth, trials, seed, tokens generated); a rerun skips every cell already there, and never reuses a row of
an older layout. Under ``torchrun --nproc_per_node=K`` the cells are split over the ranks
(:mod:`ropelab.evaluate.shard`); the rows are those of one process.

>>> run = passkey_grid("smollm2", methods="none,yarn", factors=[2], lengths=[4096, 8192],
...                    depths=[0.5], trials=2, out="runs/passkey")            # doctest: +SKIP
>>> print(run.table)                                                            # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ropelab.errors import RopeConfigError
from ropelab.evaluate.passkey import FILLER, INTRO, QUESTION, cell_prompts, key_line, run_cell
from ropelab.evaluate.report import passkey_plots, passkey_table
from ropelab.evaluate.setup import expand_methods, open_model
from ropelab.evaluate.shard import job_lock, run_cells, shared_context
from ropelab.hf import Extension
from ropelab.registry import MethodSpec
from ropelab.report.provenance import corpus_identity, resume_key, stamp
from ropelab.train.distributed import Dist

#: tokens generated per trial (the first number in them is the answer)
NEW_TOKENS = 8


def prompt_identity() -> dict[str, str]:
    """The "corpus" of a passkey run: the prompt's fixed text (a change to it is another run)."""
    return corpus_identity("passkey", [INTRO, FILLER, QUESTION, key_line(0)])


@dataclass
class PasskeyRun:
    """What :func:`passkey_grid` did: one stamped row per cell, the table and the heatmaps."""

    records: list[dict[str, Any]]
    #: Markdown: keys found / trials per method and length, summed over depths
    table: str
    out: Path
    plots: list[Path] = field(default_factory=list)
    trained_length: int | None = None
    #: this process's rank of ``world`` under ``torchrun`` (every rank returns the same records)
    rank: int = 0
    world: int = 1

    def text(self) -> str:
        """What ``ropelab passkey`` prints (under ``torchrun``: rank 0; the other ranks one line)."""
        if self.rank:
            return f"rank {self.rank} of {self.world}: done; rank 0 prints the table"
        return "\n".join(
            [
                *(f"plot: {p}" for p in self.plots),
                f"\npasskey: keys found / trials, summed over depths (trained length {self.trained_length})",
                self.table,
                f"results: {self.out / 'results.jsonl'}",
            ]
        )


def passkey_grid(
    model: Any,
    tokenizer: Any = None,
    methods: str | MethodSpec | Iterable[str | MethodSpec] = "none",
    *,
    factors: Sequence[float] = (),
    log_n: bool = False,
    window: int | None = None,
    leak: float | None = None,
    group: int | None = None,
    lengths: Sequence[int] = (1024, 2048, 4096),
    depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    trials: int = 10,
    seed: int = 0,
    out: str | Path = "out/passkey",
    model_name: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    threads: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
    plots: bool = True,
    log: Any = None,
) -> PasskeyRun:
    """Passkey retrieval (:mod:`ropelab.evaluate.passkey`) of every method at every length and depth.

    ``model``, ``tokenizer``, ``methods`` and the options as :func:`ropelab.evaluate.evaluate_methods`.
    Writes ``OUT/results.jsonl`` (one row per cell) and, with ``plots``, ``OUT/passkey_LABEL.png``.
    ``batch_size``: trials of a cell decoded together where their prompts have one token length (the same
    answers as one at a time; recorded in the rows, not in the resume key).
    """
    if trials < 1:
        raise RopeConfigError(f"trials must be >= 1 (--trials), got {trials}")
    if batch_size < 1:
        raise RopeConfigError(f"batch_size (--batch-size) must be >= 1, got {batch_size}")
    if any(not 0 <= d <= 1 for d in depths):
        raise RopeConfigError(f"depths must lie in [0, 1] (--depths), got {list(depths)}")
    if not lengths:
        raise RopeConfigError("give at least one length")
    specs = expand_methods(methods, factors, log_n=log_n, window=window, leak=leak, group=group)
    # under torchrun: the cells are split over the ranks, each on its own device
    d, loaded, _ = open_model(
        model, tokenizer, name=model_name, dtype=dtype, device=device, threads=threads, log=log
    )
    extensions = loaded.extensions(specs)
    for length in lengths:  # every prompt fits its length, before the first cell runs
        for depth in depths:
            cell_prompts(loaded.tokenizer, length, depth, trials, seed)
    context = loaded.run_context("passkey", prompt_identity(), threads)
    out = Path(out)
    context = shared_context(context, d)  # under torchrun: rank 0's, so rows are one process's
    with job_lock(out, d):  # one job per folder: two would write every cell twice
        records = _grid(
            loaded.model,
            loaded.tokenizer,
            specs,
            extensions,
            context,
            lengths,
            depths,
            trials,
            seed,
            out,
            progress,
            d,
            batch_size,
        )
    drawn = passkey_plots(records, out, title=loaded.name) if plots and d.main else []
    return PasskeyRun(records, passkey_table(records), out, drawn, loaded.trained_length, d.rank, d.world)


class _Cell(NamedTuple):
    """One unit of the grid: a method at one length and depth, with its resume key."""

    spec: MethodSpec
    length: int
    depth: float
    key: str


def _grid(
    model: Any,
    tokenizer: Any,
    specs: Sequence[MethodSpec],
    extensions: dict[str, Extension],
    context: dict[str, Any],
    lengths: Sequence[int],
    depths: Sequence[float],
    trials: int,
    seed: int,
    out: Path,
    progress: bool,
    d: Dist,
    batch_size: int = 1,
) -> list[dict[str, Any]]:
    cells = [
        _Cell(
            spec,
            length,
            depth,
            resume_key(
                context, spec, length=length, depth=depth, trials=trials, seed=seed, new_tokens=NEW_TOKENS
            ),
        )
        for spec in specs
        for length in lengths
        for depth in depths
    ]

    def compute(cell: _Cell, ext: Extension) -> dict[str, Any]:
        t0 = time.perf_counter()
        found = run_cell(
            model,
            tokenizer,
            cell.length,
            cell.depth,
            trials,
            seed,
            new_tokens=NEW_TOKENS,
            batch_size=batch_size,
        )
        return stamp(
            context,
            cell.spec,
            ext.resolved(),
            key=cell.key,
            seed=seed,
            new_tokens=NEW_TOKENS,
            seconds=time.perf_counter() - t0,
            batch_size=batch_size,
            **found,
        )

    return run_cells(
        cells,
        compute,
        out / "results.jsonl",
        d,
        model=model,
        extensions=extensions,
        command="passkey",
        progress=progress,
        postfix=lambda c: f"{c.spec.label} L={c.length} depth={c.depth:g}",
    )
