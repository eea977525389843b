"""`ropelab train` (one lab model) and `ropelab lab` (the whole lab: evaluate, extend, fine-tune, report)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path

from ropelab.cli.flags import (
    add_batch_size,
    add_out,
    add_quiet,
    add_save_every,
    add_threads,
    length,
    positive_int,
)
from ropelab.errors import RopeConfigError

_TRAIN_HELP = {
    "encoding": "position encoding: sinusoidal, learned, nope, rope, alibi, xpos",
    "length": "training length T in tokens (bytes)",
    "steps": "optimiser steps",
    "batch_size": "sequences per step",
    "lr": "peak AdamW learning rate",
    "min_lr_ratio": "final learning rate / peak (cosine decay)",
    "warmup": "linear warm-up steps",
    "weight_decay": "AdamW weight decay on matrices (not on the encoding's parameters)",
    "grad_clip": "global gradient-norm clip",
    "seed": "seed for the initial weights and the data order",
    "d_model": "model width",
    "layers": "transformer blocks",
    "heads": "attention heads",
    "mlp_ratio": "MLP hidden width / d_model",
    "rope_base": "RoPE / xPos base",
    "max_multiple": "a learned table covers max_multiple x T positions (rows past T stay untrained)",
}


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in _split(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    from ropelab.lab import LAB_RECIPE, LabConfig

    p = sub.add_parser(
        "train",
        help="train a lab model (byte-level decoder on the stdlib) with one position encoding",
        description="Train a compact decoder-only byte model on the Python standard library's source. "
        "Deterministic for a seed; resumes from OUT/ENCODING.state.pt if stopped; writes "
        "OUT/ENCODING.safetensors (fp16 weights, config as metadata).",
    )
    g = p.add_argument_group("recipe (defaults: the committed lab models)")
    for f in fields(LAB_RECIPE):
        default = getattr(LAB_RECIPE, f.name)
        g.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=length if f.name == "length" else type(default),
            default=default,
            required=f.name == "encoding",
            help=f"{_TRAIN_HELP.get(f.name, '')} (default {default})",
        )
    add_save_every(p, default=100)
    add_threads(p, default=2)
    add_quiet(p)
    add_out(p, "out/train")
    p.set_defaults(run=run_train)

    p = sub.add_parser(
        "lab",
        help="the lab: every encoding trained short and tested long; RoPE methods; fine-tuning; report",
        description="Evaluate the lab models at 1x..16x their training length on held-out stdlib text, "
        "apply every context-extension method zero-shot to the RoPE model, fine-tune it at 4x with "
        "plain RoPE, PI, NTK and YaRN, and write OUT/report.md, plots and results.jsonl. Started again, "
        "it recomputes nothing already done.",
    )
    add_out(p, "out/lab")
    p.add_argument("--train", action="store_true", help="first train the lab models into OUT/checkpoints")
    p.add_argument("--checkpoints", type=Path, help="folder of lab checkpoints (default: the committed ones)")
    p.add_argument("--encodings", type=_split, help="comma-separated subset of the lab encodings")
    p.add_argument(
        "--methods",
        type=_split,
        help="zero-shot methods on the RoPE model: NAME[*A][+log-n], names and aliases of `ropelab methods` "
        "(pi = linear)",
    )
    p.add_argument(
        "--multiples", type=_ints, help="evaluation lengths as multiples of T (default 1,2,4,8,16)"
    )
    p.add_argument("--eval-windows", type=int, help="held-out windows per evaluation (default 16)")
    p.add_argument(
        "--finetune-methods", type=_split, help="methods to fine-tune with (default none,linear,ntk,yarn)"
    )
    p.add_argument("--finetune-steps", type=int, help="fine-tuning steps per method; 0 skips (default 150)")
    p.add_argument("--finetune-eval-every", type=int, help="evaluate at 4x every N steps (default 25)")
    add_batch_size(p, default=LabConfig.finetune_batch_size, what="fine-tuning sequences per step")
    # the lab's old spelling of --batch-size
    p.add_argument("--finetune-batch-size", dest="batch_size", type=positive_int, help=argparse.SUPPRESS)
    p.add_argument("--finetune-lr", type=float, help="fine-tuning learning rate (default 5e-4)")
    p.add_argument(
        "--train-steps", type=int, help="with --train: steps per model (default: the committed recipe)"
    )
    add_threads(p, default=2)
    add_quiet(p)
    p.set_defaults(run=run_lab)


def run_train(args: argparse.Namespace) -> int:
    from ropelab.lab import LAB_RECIPE, TrainRecipe, train_and_record
    from ropelab.report import format_table

    recipe = TrainRecipe.from_dict({f.name: getattr(args, f.name) for f in fields(LAB_RECIPE)})
    summary = train_and_record(
        recipe,
        args.out,
        progress=not args.quiet and sys.stderr.isatty(),
        save_every=args.save_every,
        threads=args.threads,
    )
    row = {
        "encoding": recipe.encoding,
        **{k: summary.get(k) for k in ("steps", "train_loss", "val_loss", "seconds")},
    }
    row["checkpoint"] = summary["path"] + (" (already trained)" if summary.get("skipped") else "")
    print(format_table([row]))
    return 0


def run_lab(args: argparse.Namespace) -> int:
    from ropelab.lab import LAB_ENCODINGS, LAB_RECIPE, LabConfig, run_lab
    from ropelab.report import format_table

    overrides = {
        "methods": args.methods,
        "multiples": args.multiples,
        "eval_windows": args.eval_windows,
        "finetune_methods": args.finetune_methods,
        "finetune_steps": args.finetune_steps,
        "finetune_eval_every": args.finetune_eval_every,
        "finetune_batch_size": args.batch_size,
        "finetune_lr": args.finetune_lr,
        "threads": args.threads,
    }
    config = LabConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    if args.train_steps is not None and not args.train:
        raise RopeConfigError("--train-steps needs --train")
    recipe = LAB_RECIPE if args.train_steps is None else LAB_RECIPE.replace(steps=args.train_steps)
    command = shlex.join(["ropelab", *sys.argv[1:]]) if sys.argv[1:2] == ["lab"] else "ropelab lab"
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_lab(
            args.out,
            config,
            checkpoints=args.checkpoints,
            train=args.train,
            recipe=recipe,
            encodings=args.encodings or LAB_ENCODINGS,
            progress=not args.quiet,
            command=command,
        )
    for message in dict.fromkeys(str(w.message) for w in caught):
        sys.stderr.write(f"ropelab lab: warning: {message}\n")
    outcome = result["outcome"]
    sections = (
        ("The seed's claims, measured", result["claims"], None),
        (
            "Encodings (loss in nats/byte; inside T, beyond T at each length; ctx = same last T tokens)",
            result["encodings"],
            None,
        ),
        ("RoPE model with each method, zero-shot", result["methods"], None),
        ("Fine-tuning at 4x: loss at 4x by step", result["finetune"][0], result["finetune"][1]),
        (
            "After fine-tuning: the same last T tokens given T and 4T context",
            result["finetune_context"],
            None,
        ),
    )
    for title, rows, columns in sections:
        if rows:
            print(f"\n{title}\n")
            print(format_table(rows, columns, digits=3))
    done = "" if outcome.complete else " (incomplete: run the same command again to finish)"
    print(
        f"\n{len(outcome.units_run)} units run, {len(outcome.units_skipped)} already done, "
        f"{time.perf_counter() - start:.0f} s{done}"
    )
    print(f"report: {result['report']}")
    for path in result["plots"].values():
        print(f"plot:   {path}")
    return 0
