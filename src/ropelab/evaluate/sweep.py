"""A method sweep on a real model: extend, evaluate every document, aggregate; resumable.

Work is done in units of (method, document). Each finished unit is appended to
``OUT/doc_results.jsonl`` at once, so a killed run loses at most the document in flight; a restart
with the same arguments skips every unit already there. When a method's documents are all done, its
aggregated cells are appended to ``OUT/results.jsonl``.

The resume keys cover every input that changes a number: the plan (protocol, lengths, stride), the
method and its parameters, the model's files (:func:`ropelab.hf.load.model_fingerprint`, carried
by the plan), the dtype and device the model runs in (read from the model), and the tokens scored
(a unit matches only the same document's same token ids; an aggregate only the same documents).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ropelab.errors import RopeConfigError
from ropelab.evaluate.perplexity import Sums, aggregate, last_sums, prefix_sums, sliding_sums
from ropelab.fsutil import folder_lock
from ropelab.hf.extend import extend, make_extension
from ropelab.report import append_jsonl, read_jsonl


@dataclass(frozen=True)
class MethodSpec:
    """A method and its parameters, as the user asked for it (``none`` = the model as loaded)."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        extra = ",".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(self.params.items())
        )
        return self.method + (f"({extra})" if extra else "")


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
    #: :func:`ropelab.hf.load.model_fingerprint` of the model's files ("" if the caller has none)
    model_fingerprint: str = ""

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

    def key(self, spec: MethodSpec, *, per_document: bool = False, **inputs: str) -> str:
        """Resume key of a method's aggregate, or (``per_document``) of its per-document units,
        which do not depend on how many documents the run uses. ``inputs``: what else decides the
        numbers (the model's dtype and device; for an aggregate, the documents' token hashes)."""
        plan = asdict(self)
        if per_document:
            plan.pop("docs")
        blob = json.dumps(
            {"plan": plan, "method": spec.method, "params": spec.params, **inputs}, sort_keys=True
        )
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


def token_sha256(ids: torch.Tensor) -> str:
    """Hash of the token ids a unit scores (int64 bytes): same text, same tokenizer, same hash."""
    return hashlib.sha256(ids.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


def model_inputs(model: Any) -> dict[str, str]:
    """The dtype and device type the model computes in (either changes the numbers)."""
    param = next(iter(model.parameters()), None)
    if param is None:
        return {}
    return {"dtype": str(param.dtype).removeprefix("torch."), "device": param.device.type}


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


def _doc_cells(model: Any, ids: torch.Tensor, plan: EvalPlan, dynamic: bool) -> dict[str, Sums]:
    if plan.mode == "prefix":
        return prefix_sums(model, ids, plan.lengths, dynamic=dynamic)
    if plan.mode == "sliding":
        stride = plan.stride or max(1, min(plan.lengths) // 2)
        return {
            f"sliding:{L}": sliding_sums(model, ids[:, : plan.needed_tokens()], L, stride)
            for L in plan.lengths
        }
    if plan.mode == "last":
        assert plan.score_last
        return last_sums(model, ids, plan.lengths, plan.score_last)
    raise RopeConfigError(f"unknown evaluation mode {plan.mode!r}; choose prefix, sliding or last")


def run_sweep(
    model: Any,
    docs: list[tuple[str, torch.Tensor]],
    plan: EvalPlan,
    specs: Sequence[MethodSpec],
    out: Path,
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate every method on every document; returns the aggregated records of all methods."""
    with folder_lock(out):  # one process per folder: two would write every row twice
        return _run_sweep(model, docs, plan, specs, out, progress=progress)


def _run_sweep(
    model: Any,
    docs: list[tuple[str, torch.Tensor]],
    plan: EvalPlan,
    specs: Sequence[MethodSpec],
    out: Path,
    *,
    progress: bool,
) -> list[dict[str, Any]]:
    from tqdm import tqdm

    doc_file, result_file = out / "doc_results.jsonl", out / "results.jsonl"
    done = {(r["key"], r["doc"], r.get("tokens_sha256")): r for r in read_jsonl(doc_file)}
    # per row, not per method: a torn (dropped) last row is written again, the others are not
    finished = {
        (r["key"], r.get("metric"), r.get("length"))
        for r in read_jsonl(result_file)
        if r.get("command") == "eval"
    }
    bar = tqdm(total=len(specs) * len(docs), desc="eval", unit="doc", disable=not progress)
    records: list[dict[str, Any]] = []
    need = plan.needed_tokens()
    hashes = [token_sha256(ids[:, :need]) for _, ids in docs]
    corpus_sha = hashlib.sha256(
        "".join(f"{name}\0{h}\n" for (name, _), h in zip(docs, hashes, strict=True)).encode()
    ).hexdigest()[:16]
    inputs = model_inputs(model)
    for spec in specs:
        key = plan.key(spec, **inputs, documents=corpus_sha)
        unit_key = plan.key(spec, per_document=True, **inputs)
        ext = make_extension(model.config, spec.method, **spec.params) if spec.method != "none" else None
        dynamic = bool(ext and ext.rope.method.dynamic)
        per_doc: list[dict[str, Sums]] = []
        units = [(unit_key, name, h) for (name, _), h in zip(docs, hashes, strict=True)]
        pending = [u for u in units if u not in done]
        bar.update(len(docs) - len(pending))
        if pending:
            extend(model, spec.method, **spec.params)
        for (name, ids), unit in zip(docs, units, strict=True):
            if unit in done:
                cells = {k: Sums(**v) for k, v in done[unit]["cells"].items()}
            else:
                bar.set_postfix_str(f"{spec.label} {name}")
                cells = _doc_cells(model, ids[:, :need], plan, dynamic)
                record = {
                    "key": unit_key,
                    "doc": name,
                    "tokens_sha256": unit[2],
                    "method": spec.label,
                    "cells": {k: asdict(v) for k, v in cells.items()},
                }
                append_jsonl(doc_file, record)
                done[unit] = record
                bar.update(1)
            per_doc.append(cells)
        extend(model, "none")
        method_records = []
        for cell in per_doc[0]:
            metric, length = cell.split(":")
            stat = aggregate(d[cell] for d in per_doc)
            method_records.append(
                {
                    "command": "eval",
                    "key": key,
                    "method": spec.label,
                    "method_name": spec.method,
                    "params": spec.params,
                    "metric": metric,
                    "length": int(length),
                    "loss": stat.loss,
                    "ppl": stat.ppl,
                    "ci_low": stat.low,
                    "ci_high": stat.high,
                    "tokens": stat.tokens,
                    "docs": stat.docs,
                    "plan": asdict(plan),
                    **inputs,
                    "documents_sha256": corpus_sha,
                    "time": time.time(),
                }
            )
        for record in method_records:
            if (key, record["metric"], record["length"]) not in finished:
                append_jsonl(result_file, record)
        records.extend(method_records)
    bar.close()
    return records
