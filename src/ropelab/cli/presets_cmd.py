"""`ropelab presets`: the RoPE settings of known models, each with the source it was read from."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ropelab.cli.common import add_out_arg
from ropelab.presets import PRESETS, Preset, get_preset
from ropelab.report import append_jsonl, format_table
from ropelab.report.provenance import stamp, table_context

_COLUMNS = [
    "name",
    "model",
    "layers",
    "rope type",
    "base",
    "factor",
    "L0",
    "max length",
    "head_dim",
    "rotary_dim",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "presets",
        help="RoPE settings of known open models (type, base, factor, trained and maximum length)",
        description="The RoPE settings of well-known open models, read from their published config.json: "
        "one row per model (per layer type where layers differ, e.g. Gemma 3's local and global layers). "
        "--show NAME prints the stored config keys and the source they were read from.",
    )
    p.add_argument("--show", metavar="NAME", help="print one preset's stored config.json keys and its source")
    add_out_arg(p, "out/presets")
    p.set_defaults(run=run_presets)


def run_presets(args: argparse.Namespace) -> int:
    if args.show:
        return _show(args)
    rows = []
    context = table_context(command="presets")
    for preset in PRESETS.values():
        summary = preset.summary()
        rows.extend(summary)
        row = _row(context, preset, preset=preset.name, source=preset.source, summary=summary)
        append_jsonl(args.out / "results.jsonl", row)
    print(format_table(rows, _COLUMNS, headers={"rotary_dim": "rotary dim"}, digits=10))
    print(f"\n{len(PRESETS)} presets; `ropelab presets --show NAME` prints one's config and source")
    print(f"results: {args.out / 'results.jsonl'}")
    return 0


def _row(context: dict[str, Any], of: Preset, /, **fields: Any) -> dict[str, Any]:
    """A results row of the preset ``of``: ``model`` its hub id, ``model_id`` where its config was read."""
    return stamp(
        context,
        None,
        None,
        **{
            **fields,
            "model": of.model_id,
            "model_id": of.source,
            "rope_parameters": of.rope_parameters(),
        },
    )


def _show(args: argparse.Namespace) -> int:
    preset = get_preset(args.show)
    print(f"# {preset.name}: {preset.model_id}")
    print(f"# source: {preset.source}")
    if preset.note:
        print(f"# note: {preset.note}")
    print(json.dumps(preset.to_dict()["config"], indent=2))
    print("# as transformers 5 reads it (rope_parameters per layer type):")
    print(json.dumps(preset.rope_parameters(), indent=2))
    append_jsonl(
        args.out / "results.jsonl", _row(table_context(command="presets"), preset, **preset.to_dict())
    )
    print(f"results: {args.out / 'results.jsonl'}")
    return 0
