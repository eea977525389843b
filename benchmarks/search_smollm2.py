"""LongRoPE search on SmolLM2-135M-Instruct (trained to 8192) at 16k against YaRN s=2/4, NTK and dynamic NTK.

    PYTHONPATH=src .venv/bin/python benchmarks/search_smollm2.py --out docs/search/smollm2 \
        [--budget 10 --population 4 --score-last 8192 --threads 1]

1. ``ropelab.search.search_model`` at ``--target`` (16k) on the first held-out document of ``--corpus``
   (one document: a 16k forward is minutes on a CPU), the objective the same-tokens loss of the last
   ``--score-last`` tokens (default 8192: every position beyond the trained length), into ``OUT/search``.
   Resumable: a rerun recomputes nothing; a larger ``--budget`` continues the same search.
2. The same-tokens loss of the searched ``longrope`` and of ``none``, YaRN s=2 and s=4, NTK s=2 and dynamic
   NTK on that document and on the next held-out document, which the search never saw (each applied through
   the registry: ``parse_method`` -> ``ropelab.hf.make_extension`` -> ``ropelab.hf.extend``). Every loss is
   appended to ``OUT/losses.jsonl`` under (method, document, target, score_last, model fingerprint), so an
   interrupted run resumes and a changed setting is recomputed. A second process started with
   ``--baselines-only`` computes the methods that do not depend on the search (last first) beside it.
3. The exported ``rope_parameters`` (``best.json``) loaded by transformers (a ``LlamaForCausalLM`` built
   from the config with them, holding the same weights) against ropelab's extension of the same model: the
   largest logit difference over the last ``--check-keep`` positions of a ``--check-length``-token input
   (beyond the trained length, so transformers uses the long factors), with ropelab's float64 angles
   (its default) and with ``Extension.precision = "float32"`` (transformers' arithmetic).

Writes ``OUT/summary.json`` and prints a markdown table. Not in the benchmark suite (an hour of CPU).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch

from ropelab.data import load_corpus
from ropelab.data.split import is_validation
from ropelab.evaluate import last_sums, load, tokenize_documents
from ropelab.hf import extend, make_extension
from ropelab.registry import parse_method
from ropelab.search import SearchSettings, longrope_spec, search_model


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def same_tokens_loss(loaded, spec, ids: torch.Tensor, target: int, score_last: int) -> float:
    """Mean NLL of the last ``score_last`` of the first ``target`` tokens of ``ids`` ``[1, >= target]``
    with ``spec`` applied (the search objective's protocol, one document)."""
    extend(loaded.model, make_extension(loaded.model.config, spec))
    try:
        cell = last_sums(loaded.model, ids[:, :target], [target - score_last], score_last)
        sums = cell[f"last:{target - score_last}"]
    finally:
        extend(loaded.model, "none")
    return sums.nll / sums.tokens


def read_store(store: Path) -> dict[str, dict]:
    """The rows of ``losses.jsonl`` by key (re-read before every evaluation: two processes share it)."""
    if not store.exists():
        return {}
    return {r["key"]: r for r in map(json.loads, store.read_text().splitlines())}


def stored_loss(store: Path, label: str, spec, doc: tuple[str, torch.Tensor], loaded, args) -> dict:
    """The row of (method, document) from ``store``, computed and appended when absent."""
    name, ids = doc
    key = json.dumps([spec.label, name, args.target, args.score_last, loaded.model_id, args.corpus])
    done = read_store(store)
    if key in done:
        return done[key]
    a0, b0 = clocks()
    loss = same_tokens_loss(loaded, spec, ids, args.target, args.score_last)
    a1, b1 = clocks()
    row = {
        "key": key,
        "method": label,
        "document": name,
        "loss": loss,
        "wall_s": round(a1 - a0, 1),
        "cpu_s": round(b1 - b0, 1),
    }
    with store.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{label} on {name}: {loss:.4f} ({row['wall_s']} s wall, {row['cpu_s']} s CPU)", flush=True)
    return row


def export_check(loaded, run, length: int, keep: int) -> dict:
    """Largest |logit difference| between transformers loading ``run.rope_parameters`` and ropelab's
    ``longrope`` extension of the same weights, over the last ``keep`` positions of ``length`` tokens: with
    ropelab's default float64 angles and with ``precision="float32"`` (transformers' arithmetic)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, loaded.model.config.vocab_size, (1, length), generator=gen)
    cfg = copy.deepcopy(loaded.model.config)
    cfg.rope_parameters = dict(run.rope_parameters)
    cfg.max_position_embeddings = run.target
    theirs = type(loaded.model)(cfg).eval()
    theirs.load_state_dict(loaded.model.state_dict())
    assert theirs.config.rope_parameters["rope_type"] == "longrope"
    ext = make_extension(loaded.model.config, longrope_spec(run.best, scale=run.space.scale))
    out = {"length": length, "positions": keep}
    with torch.no_grad():
        b = theirs(ids, logits_to_keep=keep).logits
        for precision in ("float64", "float32"):
            extend(loaded.model, dataclasses.replace(ext, precision=precision))
            try:
                a = loaded.model(ids, logits_to_keep=keep).logits
            finally:
                extend(loaded.model, "none")
            out[f"max_abs_logit_diff_{precision}_angles"] = float((a - b).abs().max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("docs/search/smollm2"))
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--corpus", default="stdlib")
    ap.add_argument("--target", type=int, default=16384)
    ap.add_argument("--score-last", type=int, default=8192)
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check-length", type=int, default=8448)
    ap.add_argument("--check-keep", type=int, default=256)
    ap.add_argument("--baselines-only", action="store_true", help="only the methods the search does not set")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    loaded = load(args.model, dtype="float32", device="cpu")
    texts = [d for d in load_corpus(args.corpus) if is_validation(d.name)]
    docs = tokenize_documents(loaded.tokenizer, [(d.name, d.text) for d in texts], args.target, 2)
    if len(docs) < 2:
        raise SystemExit(
            f"error: the corpus {args.corpus} has fewer than 2 held-out documents of {args.target} tokens"
        )

    methods = {
        "none": parse_method("none"),
        "yarn(factor=2)": parse_method("yarn", factor=2.0),
        "yarn(factor=4)": parse_method("yarn", factor=4.0),
        "ntk(factor=2)": parse_method("ntk", factor=2.0),
        "dynamic": parse_method("dynamic"),
    }
    store = args.out / "losses.jsonl"
    which_doc = dict(zip(("search's document", "unseen document"), docs, strict=True))
    if args.baselines_only:  # a second process: the methods that do not need the search, last first
        for label, spec in reversed(methods.items()):
            for which in reversed(which_doc):
                stored_loss(store, label, spec, which_doc[which], loaded, args)
        return

    w0, c0 = clocks()
    settings = SearchSettings(population=args.population, budget=args.budget, seed=args.seed)
    run = search_model(
        loaded,
        target=args.target,
        settings=settings,
        out=args.out / "search",
        corpus=args.corpus,
        docs=1,
        score_last=args.score_last,
        threads=args.threads,
    )
    w1, c1 = clocks()

    trained = loaded.trained_length
    methods = {"searched longrope": longrope_spec(run.best, scale=run.space.scale), **methods}
    losses: dict[str, dict[str, float]] = {}
    for label, spec in methods.items():
        for which, doc in which_doc.items():
            if label == "searched longrope" and which == "search's document":
                losses.setdefault(label, {})[which] = run.best_loss  # the search's own evaluation
                continue
            losses.setdefault(label, {})[which] = stored_loss(store, label, spec, doc, loaded, args)["loss"]
    done = read_store(store)
    check = export_check(loaded, run, args.check_length, args.check_keep)
    summary = {
        "model": args.model,
        "model_fingerprint": loaded.model_id,
        "trained_length": trained,
        "target": args.target,
        "score_last": args.score_last,
        "corpus": args.corpus,
        "documents": {"search's document": docs[0][0], "unseen document": docs[1][0]},
        "population": args.population,
        "seed": args.seed,
        "evaluations": len(run.result.evaluated),
        "computed_now": run.result.computed,
        "search_wall_s_this_call": round(w1 - w0, 1),
        "search_cpu_s_this_call": round(c1 - c0, 1),
        "threads": args.threads,
        "seeds_as_longrope": run.result.seeds,
        "best_factors": list(run.best.factors),
        "best_loss": run.best_loss,
        "same_tokens_loss": losses,
        "evaluation_times": [
            {k: r[k] for k in ("method", "document", "wall_s", "cpu_s")} for r in done.values()
        ],
        "export_check": check,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    sets = ("search's document", "unseen document")
    print(
        f"\n### {args.model} at {args.target} tokens, last {args.score_last} scored; "
        f"{summary['evaluations']} evaluations, population {args.population}, seed {args.seed}"
    )
    print("| method | " + " | ".join(sets) + " |\n|---|" + "---|" * len(sets))
    for label, by_set in losses.items():
        print(f"| {label} | " + " | ".join(f"{by_set[s]:.4f}" for s in sets) + " |")
    print(f"export check: {check}")


if __name__ == "__main__":
    main()
