"""``ropelab search``: parse the flags, one library call (:func:`ropelab.search.search_model`, or
:func:`ropelab.search.search_lab` for ``--model lab``), print its table and where the config went."""

from __future__ import annotations

import argparse
import json

from ropelab.cli.flags import (
    add_corpus,
    add_device,
    add_dtype,
    add_out,
    add_quiet,
    add_threads,
    length,
    positive_int,
    prefill_chunk,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="LongRoPE search: per-pair rescale factors for a model at a target length",
        description="Evolutionary search (LongRoPE, Ding et al. 2024) of one rescale factor per rotary pair, "
        "non-decreasing from fast to slow pairs and in [1, s], seeded with PI, NTK and YaRN, scored by the "
        "same-tokens loss at the target length; resumable; writes the best as a longrope config and its "
        "exports (OUT/best.json), every evaluation (OUT/results.jsonl) and the best loss per generation "
        "(OUT/search_best.png).",
    )
    p.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (default), a model folder, a .gguf file, a hub id, or lab (the lab's RoPE model)",
    )
    p.add_argument("--target", type=length, required=True, help="the target length, e.g. 16k")
    p.add_argument(
        "--budget", type=positive_int, default=64, help="objective evaluations in all (default 64)"
    )
    p.add_argument("--population", type=positive_int, default=16, help="population size (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the search (default 0)")
    add_corpus(p)
    p.add_argument("--docs", type=positive_int, default=2, help="held-out documents scored (default 2)")
    p.add_argument(
        "--score-last",
        type=positive_int,
        default=256,
        metavar="N",
        help="the loss of the last N tokens of each document's first TARGET tokens (default 256)",
    )
    p.add_argument(
        "--upper", type=float, help="the largest factor allowed (default s = target / trained length)"
    )
    p.add_argument(
        "--n-hat",
        type=int_list,
        default=[0],
        metavar="N[,N...]",
        help="choices for LongRoPE's n_hat, initial positions left unscaled (default 0: none), e.g. 0,4,16",
    )
    p.add_argument(
        "--prefill-chunk",
        type=prefill_chunk,
        default=0,
        metavar="N",
        help="score in chunks of N tokens with a KV cache (same numbers); default 0: one pass",
    )
    add_threads(p)
    add_dtype(p)
    add_device(p)
    add_quiet(p)
    add_out(p, "out/search")
    p.set_defaults(run=run_search_cmd)


def int_list(text: str) -> list[int]:
    """``0,4,16`` -> [0, 4, 16]."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers like 0,4,16, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 0, got {text!r}")
    return values


def run_search_cmd(args: argparse.Namespace) -> int:
    from ropelab.search import SearchSettings, search_lab, search_model

    settings = SearchSettings(population=args.population, budget=args.budget, seed=args.seed)
    common = {
        "settings": settings,
        "out": args.out,
        "upper": args.upper,
        "n_hat": tuple(args.n_hat),
        "progress": not args.quiet,
    }
    if args.model == "lab":
        run = search_lab(target=args.target, threads=args.threads or 2, **common)
    else:
        run = search_model(
            args.model,
            target=args.target,
            corpus=args.corpus,
            docs=args.docs,
            score_last=args.score_last,
            dtype=args.dtype,
            device=args.device,
            threads=args.threads,
            prefill_chunk=args.prefill_chunk or None,
            log=None if args.quiet else print,
            **common,
        )
    print(run.table())
    print(
        f"\nbest n_hat {run.best.n_hat}; longrope rope_parameters: {json.dumps(run.rope_parameters)[:160]}..."
    )
    for fmt in ("vllm", "llama.cpp"):
        done = run.exports[fmt]
        print(f"{fmt}: {done['refused'] if 'refused' in done else done.get('command', '')[:160]}")
    if "nearest" in run.exports:  # n_hat > 0: no stack carries it
        nearest = json.dumps(run.exports["nearest"]["rope_parameters"])[:160]
        print(f"{run.exports['n_hat']}\nnearest (n_hat 0): {nearest}...")
    print(f"written: {', '.join(str(f) for f in run.files)}")
    return 0
