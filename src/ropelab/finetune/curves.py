"""The fine-tuning curve: ``curve.jsonl`` (one row per logged step and per evaluation) and a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ropelab.fsutil import atomic_write
from ropelab.train.loop import LoopResult


def curve_rows(result: LoopResult) -> list[dict[str, Any]]:
    """Training rows ``{kind: "train", step, loss, lr, tokens_per_s}`` then ``{kind: "eval", step, ...}``."""
    return [{"kind": "train", **h} for h in result.history] + [{"kind": "eval", **e} for e in result.evals]


def write_curve(path: str | Path, result: LoopResult) -> Path:
    """Rewrite ``path`` with the whole curve so far (atomically: a reader never sees half a file)."""
    return atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in curve_rows(result)))


def plot_curve(path: str | Path, result: LoopResult, cfg: Any, trained_length: int) -> Path:
    """Training loss per step, and the held-out loss at the fine-tuning length (PoSE's target under PoSE;
    all positions and the positions beyond the trained length) at each evaluation."""
    from ropelab.report.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = [h["step"] for h in result.history]
    ax.plot(steps, [h["loss"] for h in result.history], lw=1, alpha=0.6, label="training batch")
    if result.evals:
        e_steps = [e["step"] for e in result.evals]
        ax.plot(
            e_steps,
            [e["loss"] for e in result.evals],
            "o-",
            label=f"held-out, all {cfg.eval_length} positions",
        )
        beyond = [e.get("loss_beyond") for e in result.evals]
        if all(b is not None for b in beyond):
            ax.plot(e_steps, beyond, "s--", label=f"held-out, positions >= {trained_length}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (nats/token)")
    pose = f" + PoSE toward {cfg.pose}" if cfg.pose is not None else ""
    ax.set_title(f"{cfg.model}: {cfg.method} fine-tuned at {cfg.length} tokens{pose}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
