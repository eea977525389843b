"""`ropelab tasks`: parse the flags, make one library call (:func:`ropelab.tasks.task_grid`), print its text.

The work (prompts, the grid, resume, rows, tables, the effective-length verdicts, plots) is the library's.
"""

from __future__ import annotations

import argparse

from ropelab.cli.flags import add_batch_size, add_out, length_list, positive_int
from ropelab.cli.model_cmds import _common, add_model_args, float_list
from ropelab.errors import RopeConfigError


def task_list(text: str) -> list[str]:
    """``--tasks niah-single,vt``: names from :data:`ropelab.tasks.TASKS` (a typo: "did you mean")."""
    from ropelab.tasks import parse_tasks

    try:
        return [t.name for t in parse_tasks(text)]
    except RopeConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def unit_float(text: str) -> float:
    """A number in [0, 1] (``--threshold``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    from ropelab.tasks import DEFAULT_TASKS, TASKS

    p = sub.add_parser(
        "tasks",
        help="long-context tasks in the style of RULER (needles, variable tracking, aggregation), offline",
        description="Seeded needle-retrieval, variable-tracking and word-aggregation prompts over a "
        "haystack, greedy answers scored as RULER does, per method, task, length and depth; the "
        "effective context length of each method (task average at or above the model's own score at its "
        "trained length).",
    )
    add_model_args(p)
    p.add_argument(
        "--tasks",
        type=task_list,
        default=list(DEFAULT_TASKS),
        help=f"comma-separated tasks: {', '.join(TASKS)} (default {','.join(DEFAULT_TASKS)})",
    )
    p.add_argument(
        "--lengths",
        type=length_list,
        default=length_list("1k,2k,4k"),
        help="prompt lengths (default 1k,2k,4k)",
    )
    p.add_argument(
        "--depths",
        type=float_list,
        default=[0.0, 0.5, 1.0],
        help="first-needle depths in [0, 1] (default 0,0.5,1; the word tasks have none)",
    )
    p.add_argument("--trials", type=positive_int, default=10, help="seeded prompts per cell (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--haystack", default="filler", help="filler (default), stdlib, FILE, DIR or hf:NAME[:split]"
    )
    p.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the tokenizer's chat template (default: where it has one); --no-chat: a plain prompt",
    )
    p.add_argument(
        "--threshold",
        type=unit_float,
        help="effective-length threshold in [0, 1] (default: method none's task average at the trained "
        "length)",
    )
    add_batch_size(p, default=1, what="trials of a cell decoded together (same answers as one at a time)")
    add_out(p, "out/tasks")
    p.set_defaults(run=run_tasks)


def run_tasks(args: argparse.Namespace) -> int:
    from ropelab.tasks import task_grid

    run = task_grid(
        args.model,
        tasks=args.tasks,
        lengths=args.lengths,
        depths=args.depths,
        trials=args.trials,
        seed=args.seed,
        haystack=args.haystack,
        chat=args.chat,
        threshold=args.threshold,
        **_common(args),
    )
    print(run.text())
    return 0
