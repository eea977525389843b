"""A method sweep on a real model: extend, evaluate every document, aggregate; resumable.

Work is done in units of (method, document). Each finished unit is appended to
``OUT/doc_results.jsonl`` at once, so a killed run loses at most the document in flight; a restart
with the same arguments skips every unit already there. When a method's documents are all done, its
aggregated cells are appended to ``OUT/results.jsonl``.
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

    def needed_tokens(self) -> int:
        if self.mode == "last":
            return max(self.lengths) + (self.score_last or 0)
        return max(self.lengths)

    def key(self, spec: MethodSpec, *, per_document: bool = False) -> str:
        """Resume key of a method's aggregate, or (``per_document``) of its per-document units,
        which do not depend on how many documents the run uses."""
        plan = asdict(self)
        if per_document:
            plan.pop("docs")
        blob = json.dumps({"plan": plan, "method": spec.method, "params": spec.params}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


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
    done = {(r["key"], r["doc"]): r for r in read_jsonl(doc_file)}
    # per row, not per method: a torn (dropped) last row is written again, the others are not
    finished = {
        (r["key"], r.get("metric"), r.get("length"))
        for r in read_jsonl(result_file)
        if r.get("command") == "eval"
    }
    bar = tqdm(total=len(specs) * len(docs), desc="eval", unit="doc", disable=not progress)
    records: list[dict[str, Any]] = []
    for spec in specs:
        key, unit_key = plan.key(spec), plan.key(spec, per_document=True)
        ext = make_extension(model.config, spec.method, **spec.params) if spec.method != "none" else None
        dynamic = bool(ext and ext.rope.method.dynamic)
        per_doc: list[dict[str, Sums]] = []
        pending = [(name, ids) for name, ids in docs if (unit_key, name) not in done]
        bar.update(len(docs) - len(pending))
        if pending:
            extend(model, spec.method, **spec.params)
        for name, ids in docs:
            if (unit_key, name) in done:
                cells = {k: Sums(**v) for k, v in done[(unit_key, name)]["cells"].items()}
            else:
                bar.set_postfix_str(f"{spec.label} {name}")
                cells = _doc_cells(model, ids[:, : plan.needed_tokens()], plan, dynamic)
                append_jsonl(
                    doc_file,
                    {
                        "key": unit_key,
                        "doc": name,
                        "method": spec.label,
                        "cells": {k: asdict(v) for k, v in cells.items()},
                    },
                )
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
                    "time": time.time(),
                }
            )
        for record in method_records:
            if (key, record["metric"], record["length"]) not in finished:
                append_jsonl(result_file, record)
        records.extend(method_records)
    bar.close()
    return records
