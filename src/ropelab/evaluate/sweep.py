"""A method sweep on a real model: extend, evaluate every document, aggregate; resumable.

Work is done in units of (method, document). Each finished unit is appended to
``OUT/doc_results.jsonl`` at once, so a killed run loses at most the document in flight; a restart
with the same arguments skips every unit already there. When a method's documents are all done, its
aggregated cells are appended to ``OUT/results.jsonl``. Under ``torchrun`` the units are split over the
ranks and rank 0 writes the aggregates (:mod:`ropelab.evaluate.shard`); the rows are one process's.
``batch_size`` documents of a method are scored together (every document is cut to the plan's token
count, so they stack without padding); it changes no number beyond float rounding (1e-5 nats/token), so
it is recorded in the rows but not in the resume key.

Every row goes through :func:`ropelab.report.provenance.stamp` and carries its
:func:`~ropelab.report.provenance.resume_key` as ``key``: the run context (model files, trained length,
dtype, device, versions, corpus), the method and the plan's settings. A unit's corpus identity is its own
document's token hash (a changed document recomputes that document only); an aggregate's is the hash of
every document's. Rows of an older layout (:func:`~ropelab.report.provenance.is_current` false) are never
reused: they are computed again.

``prefill_chunk`` (one pass, or a chunked prefill with a KV cache: evaluate/nll.py) is written in every
row but kept out of the resume key: both give the same numbers within 1e-5 nats/token
(tests/test_chunked_nll.py), so a rerun with another chunk reuses the rows already there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ropelab.errors import RopeConfigError
from ropelab.evaluate.key_tokens import KeyTokenRule, find_key_tokens, mask_of
from ropelab.evaluate.nll import PrefillChunk, check_prefill_chunk, prefill_route
from ropelab.evaluate.perplexity import (
    Sums,
    aggregate,
    last_sums_rows,
    prefix_sums_rows,
    sliding_sums_rows,
    target_bytes,
)
from ropelab.evaluate.shard import append_row, job_lock, my_share, shared_context
from ropelab.hf import Extension, extend, make_extension, model_geometry
from ropelab.registry import MethodSpec, parse_method
from ropelab.report import append_jsonl, read_jsonl
from ropelab.report.provenance import corpus_identity, is_current, resume_key, run_context, stamp
from ropelab.report.stats import paired_bootstrap
from ropelab.train.distributed import Dist, barrier, broadcast_object

__all__ = ["EvalPlan", "MethodSpec", "run_sweep", "sweep_context", "token_sha256", "tokenize_documents"]


@dataclass(frozen=True)
class EvalPlan:
    """Everything that defines a sweep's numbers (and so its resume key)."""

    model: str
    corpus: str
    mode: str  # "prefix" | "sliding" | "last"
    lengths: tuple[int, ...]
    docs: int
    stride: int | None = None
    score_last: int | None = None
    #: the label of the method every other is paired against, and that finds the key tokens
    baseline: str | None = None
    #: find key tokens (LongPPL) and add ``key:L`` cells; prefix mode only
    key_tokens: KeyTokenRule | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("prefix", "sliding", "last"):
            raise RopeConfigError(f"unknown evaluation mode {self.mode!r}; choose prefix, sliding or last")
        if not self.lengths or any(int(n) != n or n < 2 for n in self.lengths):
            raise RopeConfigError(f"lengths must be integers >= 2, got {self.lengths}")
        if self.docs < 1:
            raise RopeConfigError(f"--docs must be >= 1, got {self.docs}")
        if self.stride is not None and self.stride < 1:
            raise RopeConfigError(f"sliding stride must be >= 1, got {self.stride}")
        if self.score_last is not None and self.score_last < 1:
            raise RopeConfigError(f"score_last (--score-last) must be >= 1, got {self.score_last}")
        if self.mode == "last" and self.score_last is None:
            raise RopeConfigError("mode 'last' needs score_last (--score-last N)")
        if self.mode != "sliding" and self.stride is not None:
            raise RopeConfigError(f"a sliding stride is for mode 'sliding', not {self.mode!r}")
        if self.mode != "last" and self.score_last is not None:
            raise RopeConfigError(f"score_last is for mode 'last', not {self.mode!r}")
        if self.key_tokens is not None and self.mode != "prefix":
            raise RopeConfigError(
                f"key tokens (--key-tokens) need the growing prefix: mode 'prefix', not {self.mode!r}"
            )
        if self.key_tokens is not None and self.key_tokens.short + self.key_tokens.step >= max(self.lengths):
            raise RopeConfigError(
                f"the key-token short window {self.key_tokens.short} plus its block {self.key_tokens.step} "
                f"leaves no token of the longest length {max(self.lengths)} with a shorter context: give a "
                "smaller --key-tokens or longer --lengths"
            )

    def needed_tokens(self) -> int:
        if self.mode == "last":
            return max(self.lengths) + (self.score_last or 0)
        return max(self.lengths)

    def settings(self, *, per_document: bool = False) -> dict[str, Any]:
        """What the plan sets that changes a number (a unit's do not include how many documents, nor the
        baseline, unless the baseline finds the unit's key tokens). Unset options add no field, so the
        keys of a plan without them are those of the versions before them."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "lengths": list(self.lengths),
            "stride": self.stride,
            "score_last": self.score_last,
            "docs": self.docs,
        }
        if self.baseline is not None and not per_document:
            out["baseline"] = self.baseline
        if self.key_tokens is not None:
            out["key_tokens"] = {**self.key_tokens.settings(), "identifier": self.baseline or "none"}
        if per_document:
            out.pop("docs")
        return out

    def target_spans(self) -> dict[str, tuple[int, int]]:
        """cell -> the token indices ``[a, b)`` of the targets it scores (``key`` cells: none, scattered)."""
        lengths = sorted(self.lengths)
        if self.mode == "sliding":
            return {f"sliding:{n}": (1, self.needed_tokens()) for n in lengths}
        if self.mode == "last":
            end = self.needed_tokens()
            return {f"last:{n}": (end - (self.score_last or 0), end) for n in lengths}
        out, prev = {}, 0
        for n in lengths:
            out[f"prefix:{n}"] = (1, n)
            out[f"band:{n}"] = (max(prev, 1), n)
            prev = n
        return out


def token_sha256(ids: torch.Tensor) -> str:
    """Hash of the token ids a unit scores (int64 bytes): same text, same tokenizer, same hash."""
    return hashlib.sha256(ids.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


def tokenize_documents(
    tokenizer: Any, texts: Sequence[tuple[str, str]], need: int, limit: int
) -> list[tuple[str, torch.Tensor]]:
    """The first ``limit`` documents with at least ``need`` tokens, as ``[1, n]`` id tensors."""
    out = []
    for name, text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= need:
            out.append((name, torch.tensor([ids], dtype=torch.long)))
            if len(out) == limit:
                break
    if not out:
        raise RopeConfigError(
            f"no document in the corpus has {need} tokens; use shorter --lengths or a corpus of longer texts"
        )
    return out


def _batch_cells(
    model: Any,
    ids: torch.Tensor,
    plan: EvalPlan,
    dynamic: bool,
    prefill_chunk: PrefillChunk,
    key_masks: torch.Tensor | None = None,
) -> list[dict[str, Sums]]:
    """The cells of each document (row) of ``ids`` ``[b, plan.needed_tokens()]``, scored together."""
    if plan.mode == "prefix":
        return prefix_sums_rows(
            model, ids, plan.lengths, dynamic=dynamic, prefill_chunk=prefill_chunk, key_masks=key_masks
        )
    if plan.mode == "sliding":
        stride = plan.stride or max(1, min(plan.lengths) // 2)
        per_length = {
            L: sliding_sums_rows(
                model, ids[:, : plan.needed_tokens()], L, stride, prefill_chunk=prefill_chunk
            )
            for L in plan.lengths
        }
        return [{f"sliding:{L}": sums[row] for L, sums in per_length.items()} for row in range(ids.shape[0])]
    if plan.mode == "last":
        assert plan.score_last
        return last_sums_rows(model, ids, plan.lengths, plan.score_last, prefill_chunk=prefill_chunk)
    raise RopeConfigError(f"unknown evaluation mode {plan.mode!r}; choose prefix, sliding or last")


#: the order of a method's rows: per metric (prefix before band), by length
_METRIC_ORDER = ("prefix", "band", "key", "sliding", "last")


def _cell_order(cell: str) -> tuple[int, int]:
    metric, length = cell.split(":")
    return _METRIC_ORDER.index(metric), int(length)


def documents_identity(corpus: str, docs: Sequence[tuple[str, torch.Tensor]], need: int) -> dict[str, str]:
    """The corpus as named and a hash of the documents' names and the token hashes scored."""
    return corpus_identity(corpus, [f"{name}\0{token_sha256(ids[:, :need])}" for name, ids in docs])


def sweep_context(
    model: Any,
    plan: EvalPlan,
    docs: Sequence[tuple[str, torch.Tensor]],
    *,
    model_id: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """The :func:`~ropelab.report.provenance.run_context` of an ``eval`` sweep of ``model`` (named
    ``plan.model``; ``model_id``: its fingerprint, else a hash of the name), dtype and device read from
    the model, the corpus identity from the documents' tokens."""
    param = next(model.parameters())
    if model_id is None:
        model_id = hashlib.sha256(f"unresolved:{plan.model}".encode()).hexdigest()[:16]
    return run_context(
        command="eval",
        model=plan.model,
        model_id=model_id,
        trained_length=model_geometry(model.config)["trained_length"],
        dtype=str(param.dtype),
        device=str(param.device),
        corpus=documents_identity(plan.corpus, docs, plan.needed_tokens()),
        threads=threads,
    )


def run_sweep(
    model: Any,
    docs: list[tuple[str, torch.Tensor]],
    plan: EvalPlan,
    specs: Sequence[MethodSpec],
    out: Path,
    *,
    progress: bool = True,
    context: Mapping[str, Any] | None = None,
    extensions: Mapping[str, Extension] | None = None,
    dist: Dist | None = None,
    batch_size: int = 1,
    prefill_chunk: PrefillChunk = None,
    tokenizer: Any = None,
) -> list[dict[str, Any]]:
    """Evaluate every method on every document; returns the aggregated rows of all methods.

    ``context``: the run's :func:`~ropelab.report.provenance.run_context` (default: :func:`sweep_context`);
    ``extensions``: label -> the :func:`ropelab.hf.make_extension` of each spec, if already resolved.
    ``dist``: this process's place in a ``torchrun`` job (:func:`ropelab.train.distributed.join`): the
    units are split over the ranks (:mod:`ropelab.evaluate.shard`); every rank returns the same rows.
    ``batch_size``: documents of one method per forward (same numbers within 1e-5 nats/token);
    ``prefill_chunk``: see :func:`ropelab.evaluate.nll.prefill_for` (a number is checked against every
    method before any work). Batch size and prefill chunk are recorded in every row, not keyed.
    ``tokenizer``: decodes each cell's targets for its byte count (bits per byte); without it cells have
    ``bytes: None`` and the tables show no bits per byte.

    ``plan.baseline``: when it is one of ``specs``, every other method's rows carry ``paired``, the paired
    bootstrap over documents of its loss minus the baseline's (:func:`ropelab.report.stats.paired_bootstrap`).
    ``plan.key_tokens``: the baseline method (which need not be in ``specs``) finds each document's key
    tokens first (:mod:`ropelab.evaluate.key_tokens`; ``OUT/key_tokens.jsonl``, resumable like the units),
    and every method's units get ``key:L`` cells over them.
    """
    d = dist or Dist()
    if batch_size < 1:
        raise RopeConfigError(f"batch_size (--batch-size) must be >= 1, got {batch_size}")
    extensions = dict(extensions or {})
    for spec in specs:
        if spec.label not in extensions:
            extensions[spec.label] = make_extension(model.config, spec)
    check_prefill(model.config, extensions.values(), prefill_chunk)
    context = dict(context) if context is not None else sweep_context(model, plan, docs)
    context = shared_context(context, d)
    with job_lock(out, d):  # one job per folder: two would write every row twice
        return _run_sweep(
            model,
            docs,
            plan,
            specs,
            Path(out),
            progress=progress,
            context=context,
            extensions=extensions,
            d=d,
            batch_size=batch_size,
            recorded={"batch_size": batch_size, "prefill_chunk": prefill_chunk or 0},
            prefill_chunk=prefill_chunk,
            tokenizer=tokenizer,
        )


def check_prefill(config: Any, extensions: Any, prefill_chunk: PrefillChunk) -> None:
    """Refuse a bad ``prefill_chunk``, or a chunk size (a number) for a method whose chunked prefill would
    not equal one pass (:func:`ropelab.evaluate.nll.prefill_route`), before any work."""
    check_prefill_chunk(prefill_chunk)
    if prefill_chunk:
        for ext in extensions:
            prefill_route(config, ext)


def _reusable(row: Mapping[str, Any]) -> bool:
    """A unit row to reuse: :func:`~ropelab.report.provenance.is_current` and every cell with its ``bytes``
    field (rows written before bits per byte lack it and are computed again). The layout version
    (:data:`~ropelab.report.provenance.SCHEMA`) is shared by every command and is not bumped for this: that
    would recompute the rows of passkey, lab and finetune, whose meaning did not change."""
    cells = row.get("cells")
    return (
        row.get("command") == "eval"
        and is_current(row)
        and isinstance(cells, Mapping)
        and all(isinstance(c, Mapping) and "bytes" in c for c in cells.values())
    )


def _done_units(doc_file: Path) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in read_jsonl(doc_file) if _reusable(r)}


def _key_masks(
    model: Any,
    docs: Sequence[tuple[str, torch.Tensor]],
    plan: EvalPlan,
    units: Sequence[Mapping[str, Any]],
    extension: Extension,
    spec: MethodSpec,
    out: Path,
    d: Dist,
    prefill_chunk: PrefillChunk,
    progress: bool,
) -> list[torch.Tensor]:
    """Each document's key-token mask ``[needed - 1]`` as the baseline ``spec`` finds it (resumable rows
    in ``OUT/key_tokens.jsonl``: the positions, how many, the rule; split over the ranks like the units)."""
    from ropelab.report import progress_bar

    assert plan.key_tokens is not None
    key_file = out / "key_tokens.jsonl"
    need = plan.needed_tokens()
    settings = {**plan.key_tokens.settings(), "length": need}
    keys = [resume_key(unit, spec, key_tokens=settings) for unit in units]
    done = {r["key"]: r for r in read_jsonl(key_file) if is_current(r)} if d.main else {}
    mine = my_share([j for j, k in enumerate(keys) if k not in done], d)
    if mine:
        device = next(model.parameters()).device
        bar = progress_bar(len(mine), desc="key tokens", unit="docs", disable=not (progress and d.main))
        extend(model, extension)
        for j in mine:
            ids = docs[j][1][:, :need].to(device)
            found = find_key_tokens(model, ids, plan.key_tokens, prefill_chunk=prefill_chunk)
            positions = found.positions()
            row = stamp(
                units[j],
                spec,
                extension.resolved(),
                key=keys[j],
                doc=docs[j][0],
                tokens_sha256=units[j]["corpus"]["sha256"],
                key_tokens=settings,
                count=len(positions),
                positions=positions,
            )
            append_row(key_file, row, d)
            done[keys[j]] = row
            bar.update(1)
        extend(model, "none")
        bar.close()
    barrier(d)
    if d.distributed or not d.main:
        done = {r["key"]: r for r in read_jsonl(key_file) if is_current(r)}
    return [mask_of(done[k]["positions"], need - 1) for k in keys]


def _run_sweep(
    model: Any,
    docs: list[tuple[str, torch.Tensor]],
    plan: EvalPlan,
    specs: Sequence[MethodSpec],
    out: Path,
    *,
    progress: bool,
    context: dict[str, Any],
    extensions: dict[str, Extension],
    d: Dist,
    batch_size: int,
    recorded: dict[str, Any],
    prefill_chunk: PrefillChunk,
    tokenizer: Any,
) -> list[dict[str, Any]]:
    from ropelab.report import progress_bar

    doc_file, result_file = out / "doc_results.jsonl", out / "results.jsonl"
    need = plan.needed_tokens()
    device = next(model.parameters()).device
    hashes = [token_sha256(ids[:, :need]) for _, ids in docs]
    units = [
        {**context, "corpus": {"name": plan.corpus, "document": name, "sha256": h}}
        for (name, _), h in zip(docs, hashes, strict=True)
    ]
    unit_keys = [
        [resume_key(unit, spec, **plan.settings(per_document=True)) for unit in units] for spec in specs
    ]
    # rank 0 (the only process of a one-process run) reads what is done and hands out the rest
    done = _done_units(doc_file) if d.main else {}
    pending = [(i, j) for i, keys in enumerate(unit_keys) for j, k in enumerate(keys) if k not in done]
    mine = my_share(pending, d)
    masks = None
    if plan.key_tokens is not None:  # on every rank (the masks are read back where they are done)
        base = parse_method(plan.baseline or "none")
        ext = extensions.get(base.label) or make_extension(model.config, base)
        masks = _key_masks(model, docs, plan, units, ext, base, out, d, prefill_chunk, progress)
    spans = plan.target_spans()
    n_bytes = [
        {cell: target_bytes(tokenizer, ids[0, a:b]) for cell, (a, b) in spans.items()} if tokenizer else {}
        for _, ids in docs
    ]
    total = len(specs) * len(docs)
    bar = progress_bar(total, desc="eval", unit="docs", disable=not (progress and d.main))
    aggregates = (
        _Aggregates(result_file, plan, specs, unit_keys, context, extensions, recorded) if d.main else None
    )
    shown = total - len(pending)
    bar.update(shown)
    if aggregates is not None:
        aggregates.write_ready(done)
    current: MethodSpec | None = None
    for i, group in _batches(mine, batch_size):  # documents of one method, batch_size at a time
        spec = specs[i]
        ext = extensions[spec.label]
        if spec is not current:
            extend(model, ext)
            current = spec
        bar.set_postfix_str(f"{spec.label} {', '.join(docs[j][0] for j in group)}")
        ids = torch.cat([docs[j][1][:, :need] for j in group]).to(device)
        key_masks = torch.stack([masks[j] for j in group]) if masks is not None else None
        cells_of = _batch_cells(model, ids, plan, ext.rope.method.dynamic, prefill_chunk, key_masks)
        for j, cells in zip(group, cells_of, strict=True):
            cells = {k: Sums(v.nll, v.tokens, n_bytes[j].get(k)) for k, v in cells.items()}
            record = stamp(
                units[j],
                spec,
                ext.resolved(),
                key=unit_keys[i][j],
                doc=docs[j][0],
                tokens_sha256=units[j]["corpus"]["sha256"],
                settings=plan.settings(per_document=True),
                **recorded,
                cells={k: asdict(v) for k, v in cells.items()},
            )
            append_row(doc_file, record, d)
            done[unit_keys[i][j]] = record
        if aggregates is not None:  # each method's rows as soon as all its documents are in
            if d.distributed:
                done = _done_units(doc_file)  # the other ranks' too
            now = sum(k in done for keys in unit_keys for k in keys)
            bar.update(now - shown)
            shown = now
            aggregates.write_ready(done)
    if current is not None:
        extend(model, "none")
    bar.close()
    barrier(d)  # every rank's units are in the file
    records = None
    if aggregates is not None:
        records = aggregates.write_ready(_done_units(doc_file) if d.distributed else done, last=True)
    return list(broadcast_object(records, d))


def _batches(units: Sequence[tuple[int, int]], size: int) -> list[tuple[int, list[int]]]:
    """(method index, document indices): consecutive units of one method, at most ``size`` at a time."""
    out: list[tuple[int, list[int]]] = []
    for i, j in units:
        if out and out[-1][0] == i and len(out[-1][1]) < size:
            out[-1][1].append(j)
        else:
            out.append((i, [j]))
    return out


class _Aggregates:
    """Rank 0's writer of ``results.jsonl``: each method's rows (per metric and length, over documents)
    once all its documents are done, in the sweep's order, each row once."""

    def __init__(
        self,
        result_file: Path,
        plan: EvalPlan,
        specs: Sequence[MethodSpec],
        unit_keys: list[list[str]],
        context: dict[str, Any],
        extensions: dict[str, Extension],
        recorded: Mapping[str, Any],
    ) -> None:
        self.result_file, self.plan, self.specs, self.unit_keys = result_file, plan, specs, unit_keys
        self.context, self.extensions, self.recorded = context, extensions, dict(recorded)
        # per row, not per method: a torn (dropped) last row is written again, the others are not
        self.finished = {
            (r["key"], r.get("metric"), r.get("length")): r
            for r in read_jsonl(result_file)
            if r.get("command") == "eval" and is_current(r) and "bytes" in r
        }
        labels = [s.label for s in specs]
        #: the index of the method every other is paired against (None: the baseline was not run)
        self.base = labels.index(plan.baseline) if plan.baseline in labels else None
        self.records: list[dict[str, Any]] = []
        self.next = 0  # the first method whose rows are not written yet

    def write_ready(self, done: Mapping[str, dict[str, Any]], *, last: bool = False) -> list[dict[str, Any]]:
        """Write the rows of every method, in order, whose documents are all in ``done``; returns the rows
        so far. ``last``: every method must be complete (a missing document is an error)."""
        base_done = self.base is None or all(k in done for k in self.unit_keys[self.base])
        while self.next < len(self.specs) and base_done and all(k in done for k in self.unit_keys[self.next]):
            base = None if self.base in (None, self.next) else [done[k] for k in self.unit_keys[self.base]]
            self._write(self.specs[self.next], [done[k] for k in self.unit_keys[self.next]], base)
            self.next += 1
        if last and self.next < len(self.specs):
            missing = sum(k not in done for keys in self.unit_keys for k in keys)
            where = self.result_file.with_name("doc_results.jsonl")
            raise RopeConfigError(
                f"{missing} documents' rows are missing from {where} after every rank finished: under "
                "torchrun every rank must write to the same --out folder"
            )
        return self.records

    def _write(
        self, spec: MethodSpec, rows: list[dict[str, Any]], base_rows: list[dict[str, Any]] | None
    ) -> None:
        per_doc = [{k: Sums(**v) for k, v in row["cells"].items()} for row in rows]
        base_doc = [{k: Sums(**v) for k, v in row["cells"].items()} for row in base_rows or []]
        key = resume_key(self.context, spec, **self.plan.settings())
        resolved = self.extensions[spec.label].resolved()
        for cell in sorted(per_doc[0], key=_cell_order):  # computed and resumed units in one order
            metric, length = cell.split(":")
            stat = aggregate(doc[cell] for doc in per_doc)
            paired = None
            if base_doc and stat.tokens:
                mine, theirs = [doc[cell] for doc in per_doc], [doc[cell] for doc in base_doc]
                paired = {
                    "baseline": self.plan.baseline,
                    **paired_bootstrap(
                        [c.nll for c in mine],
                        [c.tokens for c in mine],
                        [c.nll for c in theirs],
                        [c.tokens for c in theirs],
                    ).to_dict(),
                }
            record = stamp(
                self.context,
                spec,
                resolved,
                key=key,
                metric=metric,
                length=int(length),
                loss=stat.loss if stat.tokens else None,
                ppl=stat.ppl if stat.tokens else None,
                ci_low=stat.low,
                ci_high=stat.high,
                tokens=stat.tokens,
                docs=stat.docs,
                bytes=stat.bytes,
                bpb=stat.bpb if stat.tokens else None,
                paired=paired,
                settings=self.plan.settings(),
                **self.recorded,
            )
            where = (key, metric, int(length))
            if where not in self.finished:
                append_jsonl(self.result_file, record)
                self.finished[where] = record
            self.records.append(self.finished[where])  # a row already there is returned as it was written
