"""One fine-tuning curve of the lab's RoPE model: ``ropelab finetune``'s code path, the lab's evaluation.

:func:`finetune_curve` fine-tunes the committed (or ``--train``-ed) RoPE model with one method at
``finetune_multiple`` x T through :func:`ropelab.finetune.train` (the same engine, data order and
resume state as ``ropelab finetune --model lab``), and evaluates it every ``finetune_eval_every``
steps on the lab's held-out windows: the loss over all positions at the fine-tuning length, inside
and beyond T, and the same last T tokens given T and given the full length of context.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ropelab.errors import RopeConfigError
from ropelab.lab.config import LabConfig
from ropelab.lab.evaluate import context_view, length_nll, summarize


def finetune_curve(
    checkpoint: Path,
    label: str,
    config: LabConfig,
    *,
    windows: torch.Tensor,
    corpus_sha256: str,
    state: Path,
    state_meta: dict[str, Any],
    on_eval: Callable[[int, dict[str, Any]], None],
    progress: Any = None,
    stop_after: int | None = None,
) -> bool:
    """Fine-tune ``checkpoint`` with ``label``; ``on_eval(step, numbers)`` at each evaluation.

    ``windows``: the lab's held-out windows, int64 ``[n, >= length + 1]``. Resumes from ``state``
    (written by a run with the same ``state_meta``) and removes it when the curve is finished.
    Returns whether it finished (``stop_after`` stops it early, as a kill would).
    """
    from ropelab.finetune import FinetuneConfig, train
    from ropelab.lab.finetune_target import load_lab_target
    from ropelab.train.distributed import Dist

    c = config
    target = load_lab_target(str(checkpoint))
    if target.corpus.digest != corpus_sha256:
        raise RopeConfigError(
            "lab fine-tuning runs on the standard library corpus (`ropelab finetune --corpus stdlib`); "
            "this lab was given another corpus: use --finetune-steps 0"
        )
    model, recipe = target.model, target.meta["train"]
    trained = int(recipe["length"])
    length = trained * c.finetune_multiple
    cfg = FinetuneConfig(
        length=length,
        model="lab",
        method=label,
        steps=c.finetune_steps,
        lr=c.finetune_lr,
        batch=c.finetune_batch_size,
        warmup=c.finetune_warmup,
        schedule="constant",
        weight_decay=float(recipe["weight_decay"]),
        grad_clip=float(recipe["grad_clip"]),
        save_every=c.finetune_eval_every,
        eval_every=c.finetune_eval_every,
        log_every=10,
        seed=c.finetune_seed,
        precision="fp32",
        grad_checkpointing=False,
        device="cpu",
        threads=c.threads,
    )

    def evaluate(step: int) -> dict[str, Any]:
        nll = length_nll(model, windows, length)
        s = summarize(nll, windows.shape[0], trained)
        # does the model use the longer context? the same last T tokens given T and given 4T
        s["loss_last_short"] = context_view(model, windows, trained, trained)["loss_last"]
        s["loss_last"] = context_view(model, windows, length, trained, full=nll)["loss_last"]
        on_eval(step, s)
        return {"loss": s["loss"]}

    _, result = train(
        target,
        cfg,
        Dist(),
        state_path=state,
        meta=state_meta,
        eval_fn=evaluate,
        progress=progress,
        desc=f"finetune {label}",
        stop_after=stop_after,
        no_decay=("encoding.",),
    )
    finished = bool(result.history) and result.history[-1]["step"] == c.finetune_steps
    if finished:
        state.unlink(missing_ok=True)
    return finished
