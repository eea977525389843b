"""``ropelab advise``: parse the flags, one library call (:func:`ropelab.advise.advise`), print its text."""

from __future__ import annotations

import argparse

from ropelab.cli.flags import (
    add_corpus,
    add_device,
    add_dtype,
    add_out,
    add_quiet,
    add_threads,
    length,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "advise",
        help="which method and parameters for this model and this target length",
        description="Runs a small grid of methods (default: none; linear, ntk, yarn, dynamic at s = target / "
        "trained and the next power of two above; self-extend) with the same-tokens loss at the target, the "
        "cost inside the trained length and the niah-single retrieval score; ranks them (methods whose "
        "paired interval holds 0 share a rank) and writes the winner as HF, vLLM and llama.cpp configs "
        "(OUT/advice.md, OUT/advice.json). Resumable.",
    )
    p.add_argument(
        "--model", default="smollm2", help="smollm2 (default), a model folder, a .gguf file, a hub id"
    )
    p.add_argument("--target", type=length, required=True, help="the target length, e.g. 16k")
    p.add_argument(
        "--method",
        help="comma-separated methods to rank instead of the default grid (a method that takes a factor and "
        "has none gets target / trained); none is always added",
    )
    add_corpus(p)
    p.add_argument("--docs", type=positive_int, default=4, help="documents scored (default 4)")
    p.add_argument(
        "--score-last",
        type=positive_int,
        default=256,
        metavar="N",
        help="the loss of the last N tokens of each document's first TARGET tokens (default 256)",
    )
    p.add_argument(
        "--trials", type=positive_int, default=4, help="niah-single trials per depth (0, 0.5, 1; default 4)"
    )
    p.add_argument(
        "--search",
        type=positive_int,
        metavar="BUDGET",
        help="also run the LongRoPE search with this many evaluations and rank its best factors "
        "(default: off)",
    )
    add_threads(p)
    add_dtype(p)
    add_device(p)
    add_quiet(p)
    add_out(p, "out/advise")
    p.set_defaults(run=run_advise)


def run_advise(args: argparse.Namespace) -> int:
    from ropelab.advise import advise

    run = advise(
        args.model,
        target=args.target,
        methods=args.method,
        corpus=args.corpus,
        docs=args.docs,
        score_last=args.score_last,
        trials=args.trials,
        search_budget=args.search,
        out=args.out,
        dtype=args.dtype,
        device=args.device,
        threads=args.threads,
        progress=not args.quiet,
        log=None if args.quiet else print,
    )
    print(run.text())
    return 0
