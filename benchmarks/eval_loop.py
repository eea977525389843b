"""``ropelab eval`` over many lengths of a static method costs at most 1.3x one forward pass at the longest.

For a method that does not depend on the sequence length (``none``, static ``ntk``), the prefix protocol
runs the model once at the longest length and reads every shorter length's loss off that pass (causal
attention: position t never sees later tokens). The naive alternative, the per-length loop of the YaRN
repository's scripts, runs one forward per length. On SmolLM2 (the default model, float32) with the first
document of the default corpus and lengths 128..1024, per method:

* (a) the library's sweep: :func:`ropelab.evaluate.sweep.run_sweep`, what ``ropelab eval`` calls (fresh
  output folder each call, so no resume file skips work), including the extension, the per-token NLL, the
  JSONL writes and the aggregation;
* (b) one bare forward pass at the longest length, ``model(ids[:, :L_max]).logits``;
* (c) the per-length loop: ``model(ids[:, :L], labels=ids[:, :L]).loss`` for every L (transformers' own
  loss, as the YaRN scripts compute it).

Claims: (a)/(b) <= 1.3 (the whole sweep is one pass plus bookkeeping); (c)/(a), the speed-up over the
per-length loop, reported (the ideal is sum(L) / L_max = 3, the tokens the loop runs over those of one
pass). Checked once per method before timing: (a)'s loss at every length equals the library's own scorer
run once per length (``prefix_sums(..., dynamic=True)``) within 1e-4 nats/token, so sharing the pass
changes no number; and (c), transformers' loss, agrees within 1e-4 as well.
One thread (the machine is shared); a round is about 15 s per method.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from common import Row, best_ratio, cli, measure, median_ms, ratio, row
from ropelab.data import load_corpus
from ropelab.evaluate.perplexity import prefix_sums
from ropelab.evaluate.sweep import EvalPlan, MethodSpec, run_sweep, tokenize_documents
from ropelab.hf.extend import extend, make_extension
from ropelab.hf.load import load_model

SUITE = True
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
LENGTHS = (128, 256, 384, 512, 768, 1024)
DOCS = 1
METHODS = (MethodSpec("none"), MethodSpec("ntk", {"factor": 2.0}))
TOLERANCE = 1e-4
HF_TOLERANCE = 1e-4

CLAIM_PASS = "eval sweep over 6 lengths / one forward pass at the longest length (time ratio)"
CLAIM_LOOP = "per-length loop / eval sweep (speedup)"


def per_length_loop(model, docs, spec: MethodSpec) -> dict[int, float]:
    """The naive way: one forward per length and document, transformers' mean loss; token-weighted."""
    extend(model, spec.method, **spec.params)
    nll = dict.fromkeys(LENGTHS, 0.0)
    with torch.no_grad():
        for _, ids in docs:
            for length in LENGTHS:
                window = ids[:, :length]
                loss = model(input_ids=window, labels=window, use_cache=False).loss
                nll[length] += float(loss) * (length - 1)
    extend(model, "none")
    return {length: nll[length] / (len(docs) * (length - 1)) for length in LENGTHS}


def scored_per_length(model, docs, spec: MethodSpec) -> dict[int, float]:
    """The library's scorer with one forward per length (its path for dynamic methods); token-weighted."""
    extend(model, spec.method, **spec.params)
    cells = [prefix_sums(model, ids[:, : max(LENGTHS)], LENGTHS, dynamic=True) for _, ids in docs]
    extend(model, "none")
    out = {}
    for length in LENGTHS:
        sums = [c[f"prefix:{length}"] for c in cells]
        out[length] = sum(s.nll for s in sums) / sum(s.tokens for s in sums)
    return out


def one_pass(model, docs, spec: MethodSpec) -> None:
    extend(model, spec.method, **spec.params)  # microseconds: swaps the rotary tables
    with torch.no_grad():
        for _, ids in docs:
            model(input_ids=ids[:, : max(LENGTHS)], use_cache=False).logits  # noqa: B018
    extend(model, "none")


def main() -> list[Row]:
    torch.set_num_threads(THREADS)
    model, tokenizer = load_model("smollm2")
    plan = EvalPlan(model="smollm2", corpus="stdlib", mode="prefix", lengths=LENGTHS, docs=DOCS)
    texts = [(d.name, d.text) for d in load_corpus("stdlib")]
    docs = tokenize_documents(tokenizer, texts, plan.needed_tokens(), DOCS)
    with tempfile.TemporaryDirectory(prefix="ropelab-bench-") as tmp:
        return run_methods(model, docs, plan, Path(tmp))


def run_methods(model, docs, plan: EvalPlan, scratch: Path) -> list[Row]:
    calls = iter(range(10**9))

    def sweep(spec: MethodSpec) -> list[dict]:
        # a fresh output folder per call: nothing to resume, every unit is computed
        return run_sweep(model, docs, plan, [spec], scratch / f"run{next(calls)}", progress=False)

    shapes = f"{DOCS} doc ({docs[0][0]}), lengths {','.join(map(str, LENGTHS))}, fp32, {THREADS} thread"
    ideal = sum(LENGTHS) / max(LENGTHS)
    rows: list[Row] = []
    for spec in METHODS:
        if spec.method != "none":
            assert not make_extension(model.config, spec.method, **spec.params).rope.method.dynamic
        # correctness first (doubles as the warm-up). The shared pass changes nothing: the same scorer
        # run once per length gives the sweep's numbers ...
        ours = {r["length"]: r["loss"] for r in sweep(spec) if r["metric"] == "prefix"}
        separate = scored_per_length(model, docs, spec)
        shared_gap = max(abs(ours[L] - separate[L]) for L in LENGTHS)
        assert shared_gap <= TOLERANCE, (
            f"{spec.label}: shared pass and per-length passes differ by {shared_gap:.2e}"
        )
        # ... and transformers' own loss, the YaRN scripts' number, agrees up to float32 rounding of the
        # softmax (reported; see the module docstring)
        theirs = per_length_loop(model, docs, spec)
        hf_gap = max(abs(ours[L] - theirs[L]) for L in LENGTHS)
        assert hf_gap <= HF_TOLERANCE, f"{spec.label}: sweep and transformers' loss differ by {hf_gap:.2e}"

        times = measure(
            {
                "sweep": lambda spec=spec: sweep(spec),
                "one_pass": lambda spec=spec: one_pass(model, docs, spec),
                "per_length": lambda spec=spec: per_length_loop(model, docs, spec),
            },
            repeats=REPEATS,
            warmup=0,
        )
        ms = " ".join(f"{v}={median_ms(times, v):.0f}" for v in times)
        detail = (
            f"ms: {ms}; max over lengths of |loss(sweep) - loss(one pass per length, same scorer)| "
            f"= {shared_gap:.1e} nats/token, of |loss(sweep) - loss(transformers, per-length loop)| "
            f"= {hf_gap:.1e}; "
            f"ideal loop/sweep (sum L / max L) = {ideal:.2f}"
        )
        rows.append(
            row(
                CLAIM_PASS,
                f"{spec.label}: (a) sweep / (b) one pass",
                ratio(times, "sweep", "one_pass"),
                "<= 1.3",
                shapes,
                detail,
                best=best_ratio(times, "sweep", "one_pass"),
            )
        )
        rows.append(
            row(
                CLAIM_LOOP,
                f"{spec.label}: (c) per-length loop / (a) sweep",
                ratio(times, "per_length", "sweep"),
                None,
                shapes,
                best=best_ratio(times, "per_length", "sweep"),
            )
        )
    return rows


if __name__ == "__main__":
    cli(main)
