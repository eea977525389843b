"""`ropelab finetune`: fine-tune a model at a longer length with a method; runs unchanged under torchrun."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import TYPE_CHECKING

from ropelab.cli.flags import (
    add_batch_size,
    add_corpus,
    add_device,
    add_dtype,
    add_out,
    add_quiet,
    add_save_every,
    add_threads,
    length,
)

if TYPE_CHECKING:
    from ropelab.finetune import FinetuneConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune at a longer length with a method (one CPU, or torchrun for DDP/FSDP)",
        description="Fine-tune a transformers causal LM (or a lab model: --model lab) at --length with "
        "--method applied; resumable (run the same command again), logs loss/lr/tokens per second, "
        "evaluates held-out loss at --length, saves results.jsonl, curve.jsonl, curve.png and the model. "
        "Several processes: torchrun --nproc_per_node=K -m ropelab finetune ... (DDP; --strategy fsdp to "
        "shard).",
    )
    g = p.add_argument_group("model and method")
    g.add_argument(
        "--model", default="smollm2", help="smollm2 (default), a model folder, .gguf, hub id, or lab"
    )
    g.add_argument(
        "--method",
        default="yarn",
        help="a method of `ropelab methods` (aliases such as pi accepted; e.g. yarn, linear, ntk+log-n, "
        "self-extend(group=8)), or none (default yarn)",
    )
    g.add_argument("--factor", type=float, help="scale factor (default: length / trained length)")
    g.add_argument("--window", type=int, help="ReRoPE / Self-Extend window")
    g.add_argument("--group", type=int, help="Self-Extend group size")
    g.add_argument("--leak", type=float, help="leaky ReRoPE k")
    d = p.add_argument_group("data and schedule")
    d.add_argument("--length", type=length, required=True, help="training length in tokens, e.g. 16k")
    d.add_argument(
        "--pose",
        type=length,
        metavar="TARGET",
        help="PoSE (arXiv 2309.10400): train on --length windows whose position ids skip ahead to cover "
        "[0, TARGET), e.g. --length 2k --pose 16k; the method is set for TARGET (factor TARGET / trained "
        "length) and the held-out loss is measured at TARGET",
    )
    d.add_argument(
        "--pose-chunks",
        type=int,
        default=2,
        help="chunks per PoSE window, each with its own skip (default 2)",
    )
    d.add_argument(
        "--pose-text",
        choices=["contiguous", "skipped"],
        default="contiguous",
        help="a PoSE window's text: contiguous (default), or a TARGET-token stretch read at the skipped ids",
    )
    add_corpus(d)
    d.add_argument("--steps", type=int, default=100, help="optimiser steps (default 100)")
    d.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (default 2e-5)")
    add_batch_size(d, default=1, what="sequences per process per micro-step")
    d.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimiser step (default 1)")
    d.add_argument("--warmup", type=int, default=10, help="linear warm-up steps (default 10)")
    d.add_argument("--schedule", choices=["cosine", "constant"], default="cosine", help="after warm-up")
    d.add_argument("--weight-decay", type=float, default=0.0)
    d.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("saving, evaluation, engine")
    add_save_every(o, default=50)
    o.add_argument("--eval-every", type=int, default=25, help="held-out loss every N steps (default 25)")
    o.add_argument("--eval-windows", type=int, default=4, help="held-out windows of --length (default 4)")
    add_dtype(o)
    o.add_argument(
        "--grad-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute activations in backward (default: on for transformers models)",
    )
    o.add_argument("--strategy", choices=["auto", "ddp", "fsdp"], default="auto", help="under torchrun")
    add_device(o)
    add_threads(o)
    add_quiet(o)
    add_out(p, "out/finetune")
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The run's settings from the parsed flags (``--dtype`` is the config's ``precision``)."""
    from ropelab.finetune import FinetuneConfig

    params = {k: getattr(args, k) for k in ("window", "group", "leak") if getattr(args, k) is not None}
    return FinetuneConfig(
        length=args.length,
        pose=args.pose,
        pose_chunks=args.pose_chunks,
        pose_text=args.pose_text,
        model=args.model,
        method=args.method,
        factor=args.factor,
        params=params,
        corpus=args.corpus,
        steps=args.steps,
        lr=args.lr,
        batch=args.batch_size,
        grad_accum=args.grad_accum,
        warmup=args.warmup,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        save_every=args.save_every,
        eval_every=args.eval_every,
        eval_windows=args.eval_windows,
        seed=args.seed,
        precision=args.dtype,
        grad_checkpointing=args.grad_checkpointing,
        strategy=args.strategy,
        device=args.device,
        threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    from ropelab.finetune import run_finetune
    from ropelab.lab.finetune_target import is_lab_model, load_lab_target

    cfg = config_from_args(args)
    target = load_lab_target(cfg.model, cfg.corpus) if is_lab_model(cfg.model) else None
    command = "ropelab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    summary = run_finetune(cfg, args.out, target, progress=not args.quiet, command=command)
    if summary.get("finished") and summary.get("model") and os.environ.get("RANK", "0") == "0":
        last = summary["evals"][-1] if summary.get("evals") else {}
        first = summary["evals"][0] if summary.get("evals") else {}
        if first and last:
            print(
                f"held-out loss at {args.pose or args.length}: {first['loss']:.4f} (step {first['step']}) -> "
                f"{last['loss']:.4f} (step {last['step']})"
            )
        print(
            f"model: {summary['model']}; results: {args.out / 'results.jsonl'}; curve: "
            f"{args.out / 'curve.jsonl'}, {summary.get('plot')}"
        )
        if summary.get("tokens_per_s_median"):
            print(f"training throughput: {summary['tokens_per_s_median']:.0f} tokens/s (median over steps)")
    return 0
