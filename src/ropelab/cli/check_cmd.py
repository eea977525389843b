"""`ropelab check CONFIG.json ...`: what transformers, vLLM and llama.cpp compute for each config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ropelab.cli.common import add_out_arg, preset_config
from ropelab.errors import RopeConfigError
from ropelab.report import append_jsonl, format_table
from ropelab.report.provenance import stamp, table_context


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="per stack (transformers, vLLM, llama.cpp): the frequencies a config.json really gets",
        description="For each transformers config.json: the inverse frequencies, attention factor, maximum "
        "length and switching rule that transformers (installed), vLLM and llama.cpp (semantics read from "
        "their source) use, against ropelab's exact reference, with a verdict per stack. A stack that "
        "differs is a finding (exit 0); bad input exits 2.",
    )
    p.add_argument(
        "configs", nargs="*", type=Path, metavar="CONFIG.json", help="transformers config.json file(s)"
    )
    p.add_argument(
        "--preset",
        help="known models by name, comma-separated, or 'all' (see `ropelab presets`), besides or instead "
        "of CONFIG.json files",
    )
    p.add_argument(
        "--strict", action="store_true", help="exit 1 when any stack differs or cannot express a config"
    )
    add_out_arg(p, "out/check")
    p.set_defaults(run=run_check)


def read_json(path: Path) -> dict[str, Any]:
    """A config file's JSON object; one-line :class:`RopeConfigError` for anything else."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RopeConfigError(f"{path} is not valid JSON ({err.msg}, line {err.lineno})") from None
    except UnicodeDecodeError:
        raise RopeConfigError(f"{path} is not a text (JSON) file") from None
    if not isinstance(data, dict):
        raise RopeConfigError(f"{path} must hold a JSON object (a transformers config.json)")
    return data


def preset_names(text: str | None) -> list[str]:
    """``--preset a,b`` -> ``["a", "b"]``; ``all`` -> every preset; each name checked (did you mean)."""
    from ropelab.presets import PRESETS, get_preset

    if text is None:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(PRESETS)
    if not names:
        raise RopeConfigError("--preset needs a name (see `ropelab presets`)")
    return [get_preset(n).name for n in names]


def run_check(args: argparse.Namespace) -> int:
    from ropelab.stacks import check_config

    # all bad input before any output
    configs = [(path.name, read_json(path)) for path in args.configs]
    configs += [(name, preset_config(name)) for name in preset_names(args.preset)]
    if not configs:
        raise RopeConfigError("give a CONFIG.json or --preset NAME (see `ropelab presets`)")
    differs = False
    for name, config in configs:
        report = check_config(config, name=name)
        print(format_report(report) + "\n")
        differs = differs or any(row.status != "same" for row in report.rows)
        row = stamp(table_context(command="check"), None, None, **report.as_dict())
        append_jsonl(args.out / "results.jsonl", row)
    print(f"results: {args.out / 'results.jsonl'}")
    return 1 if (args.strict and differs) else 0


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _slowest(inv_freq: Any) -> str:
    """The slowest pair's inverse frequency at each evaluated length (the one scaling moves most)."""
    return " / ".join(f"{t[-1]:.4g}" for t in inv_freq if t) or "-"


def _at(x: float | None, length: int | None, n_lengths: int) -> str:
    """The worst relative difference, and where, when several lengths were evaluated."""
    return _num(x) + (f" @{length}" if x and n_lengths > 1 else "")


def format_report(report: Any) -> str:
    """The per-stack table and verdicts of one :class:`ropelab.stacks.CheckReport`."""
    rope = report.rope
    facts = [
        f"method {report.method}",
        f"head_dim {rope['head_dim']} (rotary {report.rotary_dim})",
        f"base {rope['base']:g}",
    ]
    if "factor" in rope:
        facts.append(f"factor {rope['factor']:g}")
    if report.trained_length:
        facts.append(f"L0 {report.trained_length}")
    facts.append(f"max_position_embeddings {report.max_position_embeddings}")
    at = ", ".join(f"L={n}" for n in report.lengths)
    lines = [
        f"== {report.name}: " + ", ".join(facts),
        f"evaluated at {at} (slowest theta, attention: one value per length; all theta_i in results.jsonl)",
    ]
    rows = [
        {
            "stack": "ropelab (reference)",
            "max length": report.max_position_embeddings,
            "slowest theta": _slowest(report.reference_inv_freq),
            "freq rel diff": "0",
            "attention": " / ".join(f"{a:.6g}" for a in report.reference_attention),
            "attn rel diff": "0",
            "rule": report.reference_rule,
        }
    ]
    for row in report.rows:
        rows.append(
            {
                "stack": row.stack,
                "max length": row.max_length,
                "slowest theta": _slowest(row.inv_freq),
                "freq rel diff": _at(row.freq_rel_diff, row.worst_length, len(report.lengths)),
                "attention": " / ".join(f"{a:.6g}" for a in row.attention) or "-",
                "attn rel diff": _num(row.attention_rel_diff),
                "rule": row.rule or "-",
            }
        )
    lines.append(format_table(rows))
    lines += [f"{row.stack}: {row.verdict}" for row in report.rows]
    lines.append("read from: " + "; ".join(row.source for row in report.rows))
    return "\n".join(lines)
