"""``ropelab eval`` as one call: :func:`evaluate_methods` (perplexity against context length).

>>> run = evaluate_methods("smollm2", methods="none,ntk,yarn", factors=[2], lengths=[2048, 8192],
...                        docs=2, out="runs/eval")                        # doctest: +SKIP
>>> print(run.tables["band"])                                               # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ropelab.errors import RopeConfigError
from ropelab.evaluate.key_tokens import KeyTokenRule
from ropelab.evaluate.nll import check_prefill_chunk
from ropelab.evaluate.report import (
    eval_paired_tables,
    eval_plots,
    eval_report,
    eval_tables,
    metric_title,
    paired_title,
)
from ropelab.evaluate.setup import expand_methods, open_model
from ropelab.evaluate.sweep import EvalPlan, documents_identity, run_sweep, tokenize_documents
from ropelab.registry import MethodSpec
from ropelab.report import read_jsonl


@dataclass
class EvalRun:
    """What :func:`evaluate_methods` did: the stamped rows of every method and what the report needs."""

    records: list[dict[str, Any]]
    #: metric -> Markdown table (loss with the perplexity in brackets), as in the README
    tables: dict[str, str]
    #: the text of ``OUT/report.md``: every eval run in the folder, side by side
    report: str
    out: Path
    plots: list[Path] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    trained_length: int | None = None
    wall_seconds: float = 0.0
    #: this process's rank of ``world`` under ``torchrun`` (every rank returns the same records)
    rank: int = 0
    world: int = 1

    def text(self) -> str:
        """What ``ropelab eval`` prints: each table under its title, then where the files are (under
        ``torchrun``: rank 0; the other ranks one line)."""
        if self.rank:
            return f"rank {self.rank} of {self.world}: done; rank 0 prints the tables and writes the report"
        parts = []
        paired = eval_paired_tables(self.records)
        for metric, table in self.tables.items():
            rows = [r for r in self.records if r["metric"] == metric]
            parts += [
                f"\n{metric_title(metric, rows)} (nats/token, perplexity in brackets; trained length "
                f"{self.trained_length})",
                table,
            ]
            if metric in paired:
                parts += [paired_title(rows), paired[metric]]
        parts += [f"plot: {p}" for p in self.plots]
        parts.append(
            f"\nwall time {self.wall_seconds:.0f}s; report: {self.out / 'report.md'}; "
            f"results: {self.out / 'results.jsonl'}"
        )
        return "\n".join(parts)


def _baseline(
    baseline: str | MethodSpec | None, specs: Sequence[MethodSpec], factors: Sequence[float], **options: Any
) -> MethodSpec:
    """The baseline's spec: ``baseline`` expanded like the methods (it must name one run), else ``none``."""
    if baseline is None:
        return MethodSpec("none")
    found = expand_methods(baseline, factors, **options)
    if len(found) != 1:
        raise RopeConfigError(
            f"--baseline must name one method, got {', '.join(s.label for s in found)}: give its factor in "
            "the text, e.g. yarn(factor=2)"
        )
    return found[0]


def evaluate_methods(
    model: Any,
    tokenizer: Any = None,
    methods: str | MethodSpec | Iterable[str | MethodSpec] = "none",
    *,
    factors: Sequence[float] = (),
    log_n: bool = False,
    window: int | None = None,
    leak: float | None = None,
    group: int | None = None,
    corpus: str = "stdlib",
    lengths: Sequence[int] = (512, 1024, 2048),
    mode: str = "prefix",
    stride: int | None = None,
    score_last: int | None = None,
    docs: int = 8,
    prefill_chunk: int | None = None,
    baseline: str | MethodSpec | None = None,
    key_tokens: int | KeyTokenRule | None = None,
    out: str | Path = "out/eval",
    model_name: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    threads: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
    plots: bool = True,
    log: Any = None,
) -> EvalRun:
    """Loss against context length of every method on ``model``, per document and aggregated; resumable.

    ``model``: a name (``smollm2``, a folder, a ``.gguf``, a hub id: loaded in ``dtype`` on ``device``,
    ``auto`` by default) or a loaded transformers model with its ``tokenizer`` (``model_name`` says what
    rows call it; default ``config.name_or_path``). ``methods``: text in the grammar of
    :func:`ropelab.parse_methods` or specs, crossed with ``factors`` and given ``window``/``leak``/``group``
    by :func:`ropelab.evaluate.expand_methods`. ``mode``: ``prefix`` (and ``band``), ``sliding`` (with
    ``stride``) or ``last`` (with ``score_last``); see :mod:`ropelab.evaluate.perplexity`.
    ``prefill_chunk``: N scores each pass N tokens at a time with a KV cache (memory: the cache plus one
    chunk, for models whose one-pass attention is quadratic in memory); ``None``/``0``, the default: one
    pass. The same numbers within 1e-5 nats/token (:mod:`ropelab.evaluate.nll`); written in every row, not
    part of the resume key.

    ``baseline``: the method every other is compared with, paired by document (the difference of
    token-weighted mean losses and its paired bootstrap interval, :mod:`ropelab.report.stats`), in the
    method grammar; default ``none`` when ``none`` is among the methods, else no paired table. A baseline
    given and not among ``methods`` is run first. ``key_tokens``: the short window (a number of tokens, or
    a :class:`~ropelab.evaluate.key_tokens.KeyTokenRule`) of LongPPL's key tokens: the baseline (default
    ``none``) finds them in each document at the longest length, and every method gets a ``key`` loss
    over them (:mod:`ropelab.evaluate.key_tokens`, prefix mode only).

    Writes ``OUT/doc_results.jsonl`` (per document), ``OUT/results.jsonl`` (per method, metric and length;
    every row stamped with :func:`ropelab.report.provenance.stamp`), and ``OUT/report.md`` and, with
    ``plots``, ``OUT/eval_METRIC.png`` of every eval run in the folder. A rerun skips every unit whose
    resume key is already there. Under ``torchrun --nproc_per_node=K`` the units are split over the ranks,
    each on its own device (:mod:`ropelab.evaluate.shard`); the rows are one process's. ``batch_size``:
    documents of a method scored in one forward (the numbers agree with one at a time within 1e-5
    nats/token; recorded in the rows, not in the resume key). ``log``: a callable that gets one line per
    step (loading, documents), e.g. ``print``.
    """
    if batch_size < 1:
        raise RopeConfigError(f"batch_size (--batch-size) must be >= 1, got {batch_size}")
    specs = expand_methods(methods, factors, log_n=log_n, window=window, leak=leak, group=group)
    base = _baseline(baseline, specs, factors, window=window, leak=leak, group=group)
    if baseline is not None and base.label not in {s.label for s in specs}:
        specs = [base, *specs]  # a baseline asked for is run, first
    rule = KeyTokenRule(short=key_tokens) if isinstance(key_tokens, int) else key_tokens
    labels = {s.label for s in specs}
    plan = EvalPlan(  # validates the settings before any work
        model=model if isinstance(model, str) else "",
        corpus=corpus,
        mode=mode,
        lengths=tuple(int(n) for n in sorted(set(lengths))),
        docs=docs,
        stride=stride,
        score_last=score_last,
        baseline=base.label if baseline is not None or rule is not None or base.label in labels else None,
        key_tokens=rule,
    )
    check_prefill_chunk(prefill_chunk)
    from ropelab.data import load_corpus

    texts = load_corpus(corpus)  # before the slow model load: a bad corpus fails fast
    # under torchrun: the units are split over the ranks, each on its own device
    d, loaded, say = open_model(
        model, tokenizer, name=model_name, dtype=dtype, device=device, threads=threads, log=log
    )
    extensions = loaded.extensions(specs)  # every method resolves on this model before the long work
    plan = EvalPlan(**{**plan.__dict__, "model": loaded.name})
    documents = tokenize_documents(
        loaded.tokenizer, [(d.name, d.text) for d in texts], plan.needed_tokens(), plan.docs
    )
    say(
        f"{len(documents)} documents with >= {plan.needed_tokens()} tokens; "
        f"trained length {loaded.trained_length}"
    )
    context = loaded.run_context("eval", documents_identity(corpus, documents, plan.needed_tokens()), threads)
    out = Path(out)
    t0 = time.perf_counter()
    records = run_sweep(
        loaded.model,
        documents,
        plan,
        specs,
        out,
        progress=progress,
        context=context,
        extensions=extensions,
        dist=d,
        batch_size=batch_size,
        prefill_chunk=prefill_chunk,
        tokenizer=loaded.tokenizer,
    )
    wall = time.perf_counter() - t0
    if not d.main:  # rank 0 writes the report and plots
        return EvalRun(records, eval_tables(records), "", out, rank=d.rank, world=d.world)
    # the report and plots show every eval run in the folder (a run with other methods or another dtype
    # adds to them instead of replacing them; shared labels are told apart), the tables printed this run's
    folder = [r for r in read_jsonl(out / "results.jsonl") if r.get("command") == "eval"]
    note = (
        f"This run: {len(documents)} documents ({', '.join(n for n, _ in documents)}); wall time "
        f"{wall:.0f}s. The tables hold every eval run in {out}."
    )
    report = eval_report(folder, title=f"{loaded.name} on {corpus}", note=note)
    (out / "report.md").write_text(report)
    drawn = eval_plots(folder, out, title=loaded.name) if plots else []
    return EvalRun(
        records=records,
        tables=eval_tables(records),
        report=report,
        out=out,
        plots=drawn,
        documents=[n for n, _ in documents],
        trained_length=loaded.trained_length,
        wall_seconds=wall,
        world=d.world,
    )
