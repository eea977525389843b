"""`ropelab eval` and `ropelab passkey`: a real model, a method sweep, tables, plots, resumable."""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ropelab.cli.common import add_out_arg
from ropelab.cli.flags import length_list, positive_int
from ropelab.errors import RopeConfigError
from ropelab.report import append_jsonl, format_table, read_jsonl


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
        help="comma-separated: none, a RoPE method (linear, ntk, yarn, dynamic, ...), rerope, "
        "leaky-rerope, self-extend; add +log-n for log-n scaling, e.g. ntk+log-n",
    )
    g.add_argument("--factor", type=float_list, default=[2.0], help="scale factor(s), comma-separated")
    g.add_argument("--window", type=int, help="ReRoPE / Self-Extend window (default L0/4)")
    g.add_argument("--leak", type=float, help="leaky ReRoPE k (default 16)")
    g.add_argument("--group", type=int, help="Self-Extend group size G (default 4)")
    g.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def method_specs(args: argparse.Namespace) -> list[Any]:
    """Expand --method x --factor into MethodSpecs (methods that take no factor run once)."""
    from ropelab.evaluate.sweep import MethodSpec
    from ropelab.hf.extend import ATTENTION_METHODS, check_method
    from ropelab.rope.frequencies import METHODS

    specs = []
    for raw in [m.strip() for m in args.method.split(",") if m.strip()]:
        name, _, suffix = raw.partition("+")
        if suffix and suffix != "log-n":
            raise RopeConfigError(f"unknown method suffix {suffix!r} in {raw!r}; the only suffix is +log-n")
        base: dict[str, Any] = {"log_n": True} if suffix else {}
        if name in ATTENTION_METHODS:
            for key in ("window", "leak", "group"):
                if getattr(args, key) is not None:
                    base[key] = getattr(args, key)
            specs.append(MethodSpec(name, base))
        elif name in METHODS and "factor" in METHODS[name].params and name not in ("default",):
            specs.extend(MethodSpec(name, {**base, "factor": f}) for f in args.factor)
        elif name in METHODS or name == "none":
            specs.append(MethodSpec(name, base))
        else:
            check_method(name)
    if not specs:
        raise RopeConfigError("--method is empty")
    return list({spec.label: spec for spec in specs}.values())  # `--method ntk,ntk`: one run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="perplexity vs context length on a real model and corpus",
        description="Per document, loss at each context length for each method; "
        "token-weighted means with bootstrap 95%% intervals over documents.",
    )
    add_model_args(p)
    p.add_argument("--corpus", default="stdlib", help="stdlib (default), FILE, DIR, or hf:NAME[:split]")
    p.add_argument(
        "--lengths",
        type=length_list,
        default=length_list("512,1k,2k"),
        help="context lengths, e.g. 2k,4k,8k (default 512,1k,2k)",
    )
    p.add_argument("--docs", type=int, default=8, help="documents to use (those long enough), default 8")
    p.add_argument("--sliding", type=int, metavar="STRIDE", help="sliding windows with this stride")
    p.add_argument(
        "--score-last",
        type=int,
        metavar="N",
        help="same tokens, growing context: loss on the last N tokens given L tokens before them",
    )
    add_out_arg(p, "out/eval")
    p.set_defaults(run=run_eval)

    p = sub.add_parser("passkey", help="passkey retrieval grid (length x depth), heatmap")
    add_model_args(p)
    p.add_argument("--lengths", type=length_list, default=length_list("1k,2k,4k"))
    p.add_argument("--depths", type=float_list, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    add_out_arg(p, "out/passkey")
    p.set_defaults(run=run_passkey)


def _setup(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    from ropelab.hf.load import load_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    specs = method_specs(args)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    t0 = time.perf_counter()
    model, tokenizer = load_model(args.model, dtype=dtype)
    if not args.quiet:
        print(f"loaded {args.model} in {time.perf_counter() - t0:.1f}s")
    from ropelab.hf.extend import make_extension

    for spec in specs:  # validate every method before the long work starts
        if spec.method != "none":
            make_extension(model.config, spec.method, **spec.params)
    return model, tokenizer, specs


def run_eval(args: argparse.Namespace) -> int:
    from ropelab.data import load_corpus
    from ropelab.evaluate.sweep import EvalPlan, run_sweep, tokenize_documents
    from ropelab.hf.extend import model_geometry
    from ropelab.hf.load import model_fingerprint

    if args.sliding is not None and args.score_last is not None:
        raise RopeConfigError("choose one of --sliding and --score-last")
    mode = "sliding" if args.sliding is not None else "last" if args.score_last is not None else "prefix"
    plan = EvalPlan(  # validates the settings before any work
        model=args.model,
        corpus=args.corpus,
        mode=mode,
        lengths=tuple(args.lengths),
        docs=args.docs,
        stride=args.sliding,
        score_last=args.score_last,
    )
    method_specs(args)  # a bad --method fails before the corpus and the model load
    docs_text = load_corpus(args.corpus)  # before the slow model load: a bad corpus fails fast
    model, tokenizer, specs = _setup(args)
    plan = replace(plan, model_fingerprint=model_fingerprint(args.model))
    docs = tokenize_documents(
        tokenizer, [(d.name, d.text) for d in docs_text], plan.needed_tokens(), args.docs
    )
    trained = model_geometry(model.config)["trained_length"]
    print(f"{len(docs)} documents with >= {plan.needed_tokens()} tokens; trained length {trained}")
    t0 = time.perf_counter()
    records = run_sweep(model, docs, plan, specs, args.out, progress=not args.quiet)
    wall = time.perf_counter() - t0
    metrics = ["prefix", "band"] if mode == "prefix" else [mode]
    report = [
        f"# {args.model} on {args.corpus}: loss vs context length\n",
        f"{len(docs)} documents; trained length {trained}; wall time {wall:.0f}s.\n",
    ]
    for metric in metrics:
        rows_by_method: dict[str, dict[str, Any]] = defaultdict(dict)
        for r in records:
            if r["metric"] == metric:
                row = rows_by_method[r["method"]]
                row["method"] = r["method"]
                row[str(r["length"])] = f"{r['loss']:.3f} [{r['ci_low']:.2f},{r['ci_high']:.2f}]"
        title = {
            "prefix": "mean loss over the first L tokens",
            "band": "mean loss over the band (prev L, L]",
            "sliding": f"sliding windows of L, stride {args.sliding}",
            "last": f"loss on the same last {args.score_last} tokens given L tokens of context",
        }[metric]
        print(f"\n{title} (nats/token, 95% CI over documents; trained length {trained})")
        columns = ["method", *(str(length) for length in args.lengths)]  # lengths in order, not as resumed
        print(format_table(list(rows_by_method.values()), columns))
        report += [
            f"\n## {title} (nats/token, [95% CI])\n",
            format_table(list(rows_by_method.values()), columns, markdown=True),
            "",
        ]
    (args.out / "report.md").write_text("\n".join(report) + "\n")
    _plot_eval(records, args.out, trained, args.model)
    print(f"\nwall time {wall:.0f}s; report: {args.out / 'report.md'}; results: {args.out / 'results.jsonl'}")
    return 0


def _plot_eval(records: list[dict[str, Any]], out: Path, trained: int, model: str) -> None:
    from ropelab.report.plots import plot_loss_vs_length

    for metric in sorted({r["metric"] for r in records}):
        series: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
        for r in records:
            if r["metric"] == metric:
                series[r["method"]].append((r["length"], r["loss"], r["ci_low"], r["ci_high"]))
        path = plot_loss_vs_length(
            series,
            out / f"eval_{metric}.png",
            trained_length=trained,
            title=f"{model}: {metric} loss vs context length",
        )
        print(f"plot: {path}")


def run_passkey(args: argparse.Namespace) -> int:
    from ropelab.fsutil import folder_lock

    with folder_lock(args.out):  # one process per folder: two would write every cell twice
        return _run_passkey(args)


def _run_passkey(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ropelab.evaluate.passkey import cell_prompts, run_cell
    from ropelab.evaluate.sweep import model_inputs
    from ropelab.hf.extend import extend, model_geometry
    from ropelab.hf.load import model_fingerprint
    from ropelab.report.plots import plot_heatmap

    if args.trials < 1:
        raise RopeConfigError("--trials must be >= 1")
    if any(not 0 <= d <= 1 for d in args.depths):
        raise RopeConfigError("--depths must lie in [0, 1]")
    method_specs(args)  # a bad --method fails before the model load
    model, tokenizer, specs = _setup(args)
    for length in args.lengths:  # every prompt fits its length, before the first cell runs
        for depth in args.depths:
            cell_prompts(tokenizer, length, depth, args.trials, args.seed)
    trained = model_geometry(model.config)["trained_length"]
    result_file = args.out / "results.jsonl"
    # the resume key: the cell, and what else changes its numbers (the model's files, dtype, device)
    identity = {"model_fingerprint": model_fingerprint(args.model), **model_inputs(model)}
    done = {
        (r["method"], r["length"], r["depth"], r["trials"], r["seed"]): r
        for r in read_jsonl(result_file)
        if r.get("command") == "passkey"
        and r.get("model") == args.model
        and all(r.get(k) == v for k, v in identity.items())
    }
    cells = [(s, L, d) for s in specs for L in args.lengths for d in args.depths]
    bar = tqdm(total=len(cells), desc="passkey", unit="cell", disable=args.quiet)
    rows = []
    for spec in specs:
        extend(model, spec.method, **spec.params)
        grid = {}
        for length in args.lengths:
            for depth in args.depths:
                key = (spec.label, length, depth, args.trials, args.seed)
                if key not in done:
                    bar.set_postfix_str(f"{spec.label} L={length} depth={depth:g}")
                    t0 = time.perf_counter()
                    cell = run_cell(model, tokenizer, length, depth, args.trials, args.seed)
                    record = {
                        "command": "passkey",
                        "model": args.model,
                        "method": spec.label,
                        **identity,
                        "seed": args.seed,
                        "seconds": time.perf_counter() - t0,
                        **cell,
                    }
                    append_jsonl(result_file, record)
                    done[key] = record
                bar.update(1)
                grid[(length, depth)] = done[key]["accuracy"]
        extend(model, "none")
        row: dict[str, Any] = {"method": spec.label}
        for length in args.lengths:
            row[str(length)] = sum(grid[(length, d)] for d in args.depths) / len(args.depths)
        rows.append(row)
        path = plot_heatmap(
            grid,
            args.out / f"passkey_{spec.label}.png",
            trained_length=trained,
            title=f"{args.model} passkey, {spec.label}",
        )
        print(f"plot: {path}")
    bar.close()
    print(f"\npasskey accuracy by prompt length (mean over depths; trained length {trained})")
    print(format_table(rows))
    print(f"results: {result_file}")
    return 0
