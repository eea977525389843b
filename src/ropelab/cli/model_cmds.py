"""`ropelab eval` and `ropelab passkey`: parse the flags, make one library call, print its text.

The work (method resolution, the model, the sweep, resume, rows, report, plots) is
:func:`ropelab.evaluate.evaluate_methods` and :func:`ropelab.evaluate.passkey_grid`.
"""

from __future__ import annotations

import argparse
from typing import Any

from ropelab.cli.flags import (
    add_batch_size,
    add_corpus,
    add_device,
    add_dtype,
    add_out,
    add_quiet,
    add_threads,
    length,
    length_list,
    positive_int,
    prefill_chunk,
)
from ropelab.errors import RopeConfigError


def float_list(text: str) -> list[float]:
    """``2,4`` -> [2.0, 4.0]: at least one number, repeats dropped (``2,2`` is one run, not two)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 2,4, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"no number given in {text!r}")
    return list(dict.fromkeys(values))


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and method")
    g.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (default, offline), a model folder, a .gguf file, or a hub id",
    )
    g.add_argument(
        "--method",
        default="none",
        help="comma-separated methods from `ropelab methods` (aliases such as pi accepted; parameters as "
        "yarn(factor=4); +log-n for log-n scaling, e.g. ntk+log-n); default none",
    )
    g.add_argument(
        "--factor",
        type=float_list,
        default=[2.0],
        help="scale factor(s), comma-separated, for every method that takes one (default 2)",
    )
    g.add_argument("--log-n", action="store_true", help="log-n scaling on every method (as +log-n)")
    g.add_argument("--window", type=positive_int, help="ReRoPE / Self-Extend window (default L0/4)")
    g.add_argument("--leak", type=float, help="leaky ReRoPE k (default 16)")
    g.add_argument("--group", type=positive_int, help="Self-Extend group size G (default 4)")
    add_threads(g)
    add_dtype(g)
    add_device(g)
    add_quiet(g)


def _common(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments eval and passkey share, from the flags."""
    return {
        "methods": args.method,
        "factors": args.factor,
        "log_n": args.log_n,
        "window": args.window,
        "leak": args.leak,
        "group": args.group,
        "dtype": args.dtype,
        "device": args.device,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "out": args.out,
        "progress": not args.quiet,
        "log": None if args.quiet else print,
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="perplexity vs context length on a real model and corpus",
        description="Per document, loss at each context length for each method; "
        "token-weighted means with bootstrap 95% intervals over documents.",
    )
    add_model_args(p)
    add_corpus(p)
    p.add_argument(
        "--lengths",
        type=length_list,
        default=length_list("512,1k,2k"),
        help="context lengths, e.g. 2k,4k,8k (default 512,1k,2k)",
    )
    p.add_argument(
        "--docs", type=positive_int, default=8, help="documents to use (those long enough), default 8"
    )
    p.add_argument("--sliding", type=int, metavar="STRIDE", help="sliding windows with this stride")
    p.add_argument(
        "--score-last",
        type=int,
        metavar="N",
        help="same tokens, growing context: loss on the last N tokens given L tokens before them",
    )
    add_batch_size(
        p, default=1, what="documents of a method scored in one forward (same numbers within 1e-5 nats/token)"
    )
    p.add_argument(
        "--prefill-chunk",
        type=prefill_chunk,
        default=0,
        metavar="N",
        help="score in chunks of N tokens (e.g. 2k) with a KV cache: the same numbers, memory of the "
        "cache plus one chunk; default 0: one pass",
    )
    p.add_argument(
        "--baseline",
        metavar="METHOD",
        help="the method every other is compared with, paired by document (difference, 95%% paired bootstrap "
        "interval, n), in the --method grammar; default none when none is among the methods; run if missing",
    )
    p.add_argument(
        "--key-tokens",
        type=length,
        metavar="SHORT",
        help="also the loss on LongPPL's key tokens: those the baseline (default none) predicts > 2 nats "
        "better with the whole prefix than with a SHORT-token window (e.g. 1k), at < 2 nats; prefix mode",
    )
    add_out(p, "out/eval")
    p.set_defaults(run=run_eval)

    p = sub.add_parser("passkey", help="passkey retrieval grid (length x depth), heatmap")
    add_model_args(p)
    p.add_argument(
        "--lengths",
        type=length_list,
        default=length_list("1k,2k,4k"),
        help="prompt lengths (default 1k,2k,4k)",
    )
    p.add_argument(
        "--depths", type=float_list, default=[0.0, 0.25, 0.5, 0.75, 1.0], help="key depths in [0, 1]"
    )
    p.add_argument("--trials", type=int, default=10, help="seeded keys per cell (default 10)")
    p.add_argument("--seed", type=int, default=0)
    add_batch_size(p, default=1, what="trials of a cell decoded together (same answers as one at a time)")
    add_out(p, "out/passkey")
    p.set_defaults(run=run_passkey)


def run_eval(args: argparse.Namespace) -> int:
    from ropelab.evaluate import evaluate_methods

    if args.sliding is not None and args.score_last is not None:
        raise RopeConfigError("choose one of --sliding and --score-last")
    mode = "sliding" if args.sliding is not None else "last" if args.score_last is not None else "prefix"
    run = evaluate_methods(
        args.model,
        corpus=args.corpus,
        lengths=args.lengths,
        mode=mode,
        stride=args.sliding,
        score_last=args.score_last,
        docs=args.docs,
        prefill_chunk=args.prefill_chunk,
        baseline=args.baseline,
        key_tokens=args.key_tokens,
        **_common(args),
    )
    print(run.text())
    return 0


def run_passkey(args: argparse.Namespace) -> int:
    from ropelab.evaluate import passkey_grid

    run = passkey_grid(
        args.model,
        lengths=args.lengths,
        depths=args.depths,
        trials=args.trials,
        seed=args.seed,
        **_common(args),
    )
    print(run.text())
    return 0
