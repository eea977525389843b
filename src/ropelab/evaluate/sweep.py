"""A method sweep on a real model: extend, evaluate every document, aggregate; resumable.

Work is done in units of (method, document). Each finished unit is appended to
``OUT/doc_results.jsonl`` at once, so a killed run loses at most the document in flight; a restart
with the same arguments skips every unit already there. When a method's documents are all done, its
aggregated cells are appended to ``OUT/results.jsonl``.

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
from ropelab.evaluate.nll import PrefillChunk, check_prefill_chunk, prefill_route
from ropelab.evaluate.perplexity import Sums, aggregate, last_sums, prefix_sums, sliding_sums
from ropelab.fsutil import folder_lock
from ropelab.hf import Extension, extend, make_extension, model_geometry
from ropelab.registry import MethodSpec
from ropelab.report import append_jsonl, read_jsonl
from ropelab.report.provenance import corpus_identity, is_current, resume_key, run_context, stamp

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

    def needed_tokens(self) -> int:
        if self.mode == "last":
            return max(self.lengths) + (self.score_last or 0)
        return max(self.lengths)

    def settings(self, *, per_document: bool = False) -> dict[str, Any]:
        """What the plan sets that changes a number (a unit's do not include how many documents)."""
        out = {
            "mode": self.mode,
            "lengths": list(self.lengths),
            "stride": self.stride,
            "score_last": self.score_last,
            "docs": self.docs,
        }
        if per_document:
            out.pop("docs")
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


def _doc_cells(
    model: Any, ids: torch.Tensor, plan: EvalPlan, dynamic: bool, prefill_chunk: PrefillChunk
) -> dict[str, Sums]:
    if plan.mode == "prefix":
        return prefix_sums(model, ids, plan.lengths, dynamic=dynamic, prefill_chunk=prefill_chunk)
    if plan.mode == "sliding":
        stride = plan.stride or max(1, min(plan.lengths) // 2)
        return {
            f"sliding:{L}": sliding_sums(
                model, ids[:, : plan.needed_tokens()], L, stride, prefill_chunk=prefill_chunk
            )
            for L in plan.lengths
        }
    if plan.mode == "last":
        assert plan.score_last
        return last_sums(model, ids, plan.lengths, plan.score_last, prefill_chunk=prefill_chunk)
    raise RopeConfigError(f"unknown evaluation mode {plan.mode!r}; choose prefix, sliding or last")


#: the order of a method's rows: per metric (prefix before band), by length
_METRIC_ORDER = ("prefix", "band", "sliding", "last")


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
    prefill_chunk: PrefillChunk = None,
) -> list[dict[str, Any]]:
    """Evaluate every method on every document; returns the aggregated rows of all methods.

    ``context``: the run's :func:`~ropelab.report.provenance.run_context` (default: :func:`sweep_context`);
    ``extensions``: label -> the :func:`ropelab.hf.make_extension` of each spec, if already resolved;
    ``prefill_chunk``: see :func:`ropelab.evaluate.nll.prefill_for` (a number is checked against every
    method before any work).
    """
    extensions = dict(extensions or {})
    for spec in specs:
        if spec.label not in extensions:
            extensions[spec.label] = make_extension(model.config, spec)
    check_prefill(model.config, extensions.values(), prefill_chunk)
    context = dict(context) if context is not None else sweep_context(model, plan, docs)
    with folder_lock(out):  # one process per folder: two would write every row twice
        return _run_sweep(
            model,
            docs,
            plan,
            specs,
            Path(out),
            progress=progress,
            context=context,
            extensions=extensions,
            prefill_chunk=prefill_chunk,
        )


def check_prefill(config: Any, extensions: Any, prefill_chunk: PrefillChunk) -> None:
    """Refuse a bad ``prefill_chunk``, or a chunk size (a number) for a method whose chunked prefill would
    not equal one pass (:func:`ropelab.evaluate.nll.prefill_route`), before any work."""
    check_prefill_chunk(prefill_chunk)
    if prefill_chunk:
        for ext in extensions:
            prefill_route(config, ext)


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
    prefill_chunk: PrefillChunk,
) -> list[dict[str, Any]]:
    from ropelab.report import progress_bar

    doc_file, result_file = out / "doc_results.jsonl", out / "results.jsonl"
    done = {r["key"]: r for r in read_jsonl(doc_file) if r.get("command") == "eval" and is_current(r)}
    # per row, not per method: a torn (dropped) last row is written again, the others are not
    finished = {
        (r["key"], r.get("metric"), r.get("length")): r
        for r in read_jsonl(result_file)
        if r.get("command") == "eval" and is_current(r)
    }
    bar = progress_bar(len(specs) * len(docs), desc="eval", unit="docs", disable=not progress)
    records: list[dict[str, Any]] = []
    need = plan.needed_tokens()
    device = next(model.parameters()).device
    hashes = [token_sha256(ids[:, :need]) for _, ids in docs]
    units = [
        {**context, "corpus": {"name": plan.corpus, "document": name, "sha256": h}}
        for (name, _), h in zip(docs, hashes, strict=True)
    ]
    for spec in specs:
        ext = extensions[spec.label]
        resolved = ext.resolved()
        key = resume_key(context, spec, **plan.settings())
        unit_keys = [resume_key(unit, spec, **plan.settings(per_document=True)) for unit in units]
        pending = [k for k in unit_keys if k not in done]
        bar.update(len(docs) - len(pending))
        if pending:
            extend(model, ext)
        per_doc: list[dict[str, Sums]] = []
        for (name, ids), unit, unit_key in zip(docs, units, unit_keys, strict=True):
            if unit_key in done:
                cells = {k: Sums(**v) for k, v in done[unit_key]["cells"].items()}
            else:
                bar.set_postfix_str(f"{spec.label} {name}")
                cells = _doc_cells(
                    model, ids[:, :need].to(device), plan, ext.rope.method.dynamic, prefill_chunk
                )
                record = stamp(
                    unit,
                    spec,
                    resolved,
                    key=unit_key,
                    doc=name,
                    tokens_sha256=unit["corpus"]["sha256"],
                    settings=plan.settings(per_document=True),
                    prefill_chunk=prefill_chunk or 0,
                    cells={k: asdict(v) for k, v in cells.items()},
                )
                append_jsonl(doc_file, record)
                done[unit_key] = record
                bar.update(1)
            per_doc.append(cells)
        extend(model, "none")
        method_records = []
        for cell in sorted(per_doc[0], key=_cell_order):  # computed and resumed units in one order
            metric, length = cell.split(":")
            stat = aggregate(d[cell] for d in per_doc)
            method_records.append(
                stamp(
                    context,
                    spec,
                    resolved,
                    key=key,
                    metric=metric,
                    length=int(length),
                    loss=stat.loss,
                    ppl=stat.ppl,
                    ci_low=stat.low,
                    ci_high=stat.high,
                    tokens=stat.tokens,
                    docs=stat.docs,
                    settings=plan.settings(),
                    prefill_chunk=prefill_chunk or 0,
                )
            )
        for record in method_records:
            cell = (key, record["metric"], record["length"])
            if cell not in finished:
                append_jsonl(result_file, record)
                finished[cell] = record
            records.append(finished[cell])  # a row already there is returned as it was written
    bar.close()
    return records
