"""`ropelab methods`, `ropelab inspect`, `ropelab export`."""

from __future__ import annotations

import argparse
import json

from ropelab.cli.common import add_method_args, add_out_arg, named_ropes_from_args
from ropelab.cli.flags import positive_int
from ropelab.errors import RopeConfigError
from ropelab.export import FORMATS, check_exportable, export, export_layers, hf_notes
from ropelab.registry import spec_of_rope
from ropelab.report import append_jsonl, format_table
from ropelab.report.provenance import stamp, table_context
from ropelab.rope import pair_views, summarize


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "methods", help="the one vocabulary: every method and encoding, its aliases, parameters and paper"
    )
    p.set_defaults(run=run_methods)

    p = sub.add_parser(
        "inspect",
        help="per-pair wavelength, scale and turns in training vs at the target length",
        description="For each rotary pair: its wavelength, how the method scales its frequency, the turns "
        "it completes inside the trained length and at the target length, and whether it is untouched, "
        "interpolates, or extrapolates to angles never seen in training.",
    )
    add_method_args(p, several=True)
    p.add_argument(
        "--target-length",
        type=positive_int,
        help="length to inspect at (default: the stated --max-position-embeddings, else factor * L0)",
    )
    p.add_argument(
        "--plot",
        nargs="?",
        const="",
        default=None,
        metavar="PNG",
        help="write a PNG comparing the methods (default OUT/inspect.png)",
    )
    add_out_arg(p, "out/inspect")
    p.set_defaults(run=run_inspect)

    p = sub.add_parser("export", help="the method as HF rope_parameters, vLLM arguments or llama.cpp flags")
    add_method_args(p)
    p.add_argument("--format", default="hf", help=f"comma-separated, from: {', '.join(FORMATS)} (default hf)")
    p.add_argument(
        "--gguf-arch",
        default="llama",
        help="llama.cpp: the GGUF's general.architecture, for metadata overrides (default llama)",
    )
    add_out_arg(p, "out/export")
    p.set_defaults(run=run_export)


def run_methods(args: argparse.Namespace) -> int:
    """The one vocabulary (:data:`ropelab.REGISTRY`): every name any command accepts, by kind."""
    from ropelab import REGISTRY

    titles = {
        "frequency": "RoPE frequency methods (the cos/sin table: every command)",
        "attention": "attention-level methods (the scores: eval, passkey, finetune, lab, ropelab.hf.extend)",
        "encoding": "encodings (what a lab model is trained with: ropelab train / lab)",
    }
    for kind, title in titles.items():
        rows = [
            {
                "name": e.name,
                "aliases": ", ".join(e.aliases) or "-",
                "what it does": e.doc,
                "paper": e.paper,
            }
            for e in REGISTRY.values()
            if e.kind == kind
        ]
        print(f"{title}:")
        print(format_table(rows))
        print("parameters:")
        for e in REGISTRY.values():
            if e.kind == kind:
                print(f"  {e.name}: {', '.join(e.params) or '-'}")
        print()
    print(
        "log-n: +log-n on any RoPE method (--log-n: every method) scales queries by max(1, log n / log L0)\n"
        "grammar: NAME[*A][(KEY=VALUE,...)][+log-n], e.g. pi  yarn(factor=4)  self-extend(group=8)  "
        "ntk+log-n (docs/cli.md)"
    )
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    named = named_ropes_from_args(args)
    ropes = [rope for _, rope in named]
    trained = next((r.config.trained_length for r in ropes if r.config.trained_length), None)
    if trained is None:
        raise RopeConfigError("inspect needs the trained length: pass --original-max-position-embeddings")
    lengths = [r.max_length or round(trained * r.config.scale) for r in ropes]
    # a stated length wins, as in export
    target = args.target_length if args.target_length is not None else max(lengths)
    views: dict[str, list[dict]] = {}
    for layer_type, rope in named:
        rows = pair_views(rope, target, trained_length=trained)
        label = rope.config.method + (f" s={rope.config.scale:g}" if rope.config.scale != 1 else "")
        label = f"{layer_type}: {label}" if layer_type else label
        views[label] = [r.as_dict() for r in rows]
        counts = summarize(rows)
        print(
            (f"\n## layer type {layer_type}" if layer_type else "")
            + f"\n{rope!r}  trained L0={trained}  target T={target}  attention scaling "
            f"{rope.frequencies(target)[1]:.6g}"
        )
        print(
            format_table(
                views[label],
                [
                    "pair",
                    "wavelength",
                    "scaled_wavelength",
                    "scale",
                    "rotations_trained",
                    "rotations_target",
                    "regime",
                ],
                headers={
                    "scaled_wavelength": "new wavelength",
                    "rotations_trained": "turns@L0",
                    "rotations_target": "turns@T",
                },
            )
        )
        print("pairs: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        append_jsonl(
            args.out / "results.jsonl",
            stamp(
                table_context(command="inspect", trained_length=trained),
                spec_of_rope(rope),
                rope.to_dict(),
                layer_type=layer_type,
                rope=rope.to_dict(),
                target_length=target,
                summary=counts,
                pairs=views[label],
            ),
        )
    if args.plot is not None:
        from ropelab.report.plots import plot_pair_views

        path = plot_pair_views(
            views,
            args.plot or args.out / "inspect.png",
            trained_length=trained,
            target_length=target,
            title=f"RoPE pairs, head_dim {ropes[0].config.head_dim}, base {ropes[0].config.base:g}",
        )
        print(f"\nplot: {path}")
    print(f"results: {args.out / 'results.jsonl'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    for name in (args.method or "").split(","):
        check_exportable(name.strip())
    named = named_ropes_from_args(args)
    layers = {layer_type: rope for layer_type, rope in named if layer_type is not None}
    if len(named) != 1 and len(layers) != len(named):  # several methods (on one layer type)
        raise RopeConfigError("export takes one --method")
    for layer_type, rope in named if len(named) > 1 else []:
        print(f"# layer type {layer_type}: {rope!r}")
    record = {lt or "all": rope.to_dict() for lt, rope in named}
    for fmt in [f.strip() for f in args.format.split(",") if f.strip()]:
        if len(named) > 1:
            out = export_layers(layers, fmt, arch=args.gguf_arch)
        else:
            out = export(named[0][1], fmt, arch=args.gguf_arch)
        print(f"# {fmt}")
        if fmt == "hf":
            print(json.dumps(out, indent=2))
            for layer_type, rope in named:
                for line in hf_notes(rope):
                    print(f"# note: {layer_type + ': ' if layer_type else ''}{line}")
        else:
            print(out["command"])
            if "legacy_command" in out:
                print(f"# older vLLM:\n{out['legacy_command']}")
        for line in out.get("differences", []):
            print(f"# differs from ropelab: {line}")
        append_jsonl(
            args.out / "results.jsonl",
            stamp(
                table_context(command="export", trained_length=named[0][1].config.trained_length),
                spec_of_rope(named[0][1]) if len(named) == 1 else None,
                named[0][1].to_dict() if len(named) == 1 else None,
                format=fmt,
                rope=record if len(named) > 1 else named[0][1].to_dict(),
                export=out,
            ),
        )
    return 0
