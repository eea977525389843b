"""Fine-tuning at a longer length: one code path for ``ropelab finetune`` and the lab's fine-tuning.

:func:`train` is the shared core: seed, apply the method at the fine-tuning length, hand the model
to the engine (:mod:`ropelab.train.distributed`: DDP or FSDP under ``torchrun``), draw the step's
global batch and keep this rank's rows, AdamW with warm-up then cosine (or constant), and
:func:`ropelab.train.loop.run_loop` (gradient accumulation, resume state, bf16 autocast).
The lab's ``_finetune`` calls it with its own evaluation; :func:`run_finetune` (the command) adds
the held-out evaluation at the fine-tuning length, ``results.jsonl`` (:mod:`ropelab.finetune.results`),
the curve (JSONL and PNG), and saving the model.

What is trained is a *target* (:class:`ropelab.finetune.target.Target`): a transformers model
(:class:`ropelab.finetune.hf_target.HFTarget`, built here from ``config.model``) or any other object
with the protocol's members, passed in (the lab's: ``ropelab.lab.finetune_target.load_lab_target``).

Data parallelism is PyTorch's: the global batch of a step is the same whatever the number of
processes, so K processes give the loss curve of one process with ``grad_accum = K`` (a test).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ropelab.data import RandomWindows
from ropelab.data.pose import PoseWindows
from ropelab.errors import RopeConfigError
from ropelab.finetune.config import FinetuneConfig
from ropelab.finetune.curves import plot_curve, write_curve
from ropelab.finetune.results import COMMAND, result_rows, settings, write_results
from ropelab.finetune.target import Target, target_loss
from ropelab.fsutil import atomic_write, folder_lock
from ropelab.report.provenance import run_context
from ropelab.train.distributed import (
    Dist,
    ShardedBatches,
    model_state,
    setup,
    sum_over_ranks,
    teardown,
    unwrap,
    wrap,
)
from ropelab.train.loop import LoopResult, remove_state, run_loop, set_determinism
from ropelab.train.optim import adamw, warmup_cosine


def autocast_dtype(cfg: FinetuneConfig, d: Dist) -> torch.dtype | None:
    """bf16 autocast: ``bf16`` always, ``auto`` on a GPU that has bf16, never for ``fp32``."""
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision == "auto" and d.device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def train(
    target: Target,
    cfg: FinetuneConfig,
    d: Dist,
    *,
    state_path: Path | None,
    meta: dict[str, Any],
    eval_fn: Callable[[int], dict[str, Any]] | None = None,
    progress: Any = None,
    desc: str = "finetune",
    stop_after: int | None = None,
    on_checkpoint: Callable[[LoopResult], None] | None = None,
    no_decay: tuple[str, ...] = (),
) -> tuple[torch.nn.Module, LoopResult]:
    """Fine-tune ``target`` per ``cfg`` (the method ``cfg.spec`` applied at ``cfg.eval_length``:
    ``cfg.length``, or PoSE's target with windows of ``cfg.length`` tokens whose position ids skip toward
    it); returns (the engine's model, the loop's result)."""
    set_determinism(cfg.seed, cfg.threads)
    target.apply_method(cfg.spec, cfg.eval_length)
    checkpointing = cfg.grad_checkpointing
    if checkpointing is None:
        checkpointing = target.grad_checkpointing_default
    if checkpointing:
        target.gradient_checkpointing()
    rows = cfg.batch * cfg.grad_accum * d.world  # the global batch
    source: RandomWindows | PoseWindows
    if cfg.pose is None:
        source = RandomWindows(target.train_tokens(), batch_size=rows, length=cfg.length, seed=cfg.seed)
    else:  # (inputs, targets, position_ids): the ids a function of (seed, step)
        if "positions" not in inspect.signature(target.logits).parameters:
            raise RopeConfigError(
                f"--pose needs a target whose logits(model, inputs, positions) takes position ids; "
                f"{type(target).__name__}.logits does not"
            )
        source = PoseWindows(
            target.train_tokens(),
            batch_size=rows,
            length=cfg.length,
            target=cfg.pose,
            seed=cfg.seed,
            chunks=cfg.pose_chunks,
            text=cfg.pose_text,
        )
    model = wrap(target.model, d)
    optimizer = adamw(unwrap(model), lr=cfg.lr, weight_decay=cfg.weight_decay, no_decay=no_decay)
    min_ratio = 1.0 if cfg.schedule == "constant" else cfg.min_lr_ratio
    scheduler = warmup_cosine(optimizer, warmup=cfg.warmup, steps=cfg.steps, min_ratio=min_ratio)
    result = run_loop(
        model,
        ShardedBatches(source, d),
        target_loss(target),
        optimizer,
        scheduler,
        steps=cfg.steps,
        state_path=state_path,
        checkpoint_every=cfg.save_every,
        grad_clip=cfg.grad_clip,
        log_every=cfg.log_every,
        eval_fn=eval_fn,
        eval_every=cfg.eval_every,
        meta=meta,
        progress=progress,
        desc=desc,
        stop_after=stop_after,
        grad_accum=cfg.grad_accum,
        dist=d,
        tokens_per_step=rows * cfg.length,
        autocast_dtype=autocast_dtype(cfg, d),
        on_checkpoint=on_checkpoint,
    )
    return model, result


def held_out_eval(
    target: Target, model: torch.nn.Module, windows: torch.Tensor, d: Dist
) -> Callable[[int], dict[str, Any]]:
    """Held-out loss at the fine-tuning length, split at the model's trained length.

    ``windows`` int64 ``[n, length + 1]``; rank r scores windows r, r + K, ...; every rank runs the
    same number of forward passes (FSDP needs them all), a rank short of windows repeating one with
    weight 0. Returns ``{loss, loss_within, loss_beyond}`` (nats/token; beyond = positions >= T).
    """
    trained = target.trained_length
    device = d.device
    per_rank = math.ceil(windows.shape[0] / d.world)

    def evaluate(step: int) -> dict[str, Any]:
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # within, n_within, beyond, n_beyond
        for j in range(per_rank):
            i = d.rank + j * d.world
            weight = 1.0 if i < windows.shape[0] else 0.0
            w = windows[min(i, windows.shape[0] - 1)].to(device)
            logits = target.logits(model, w[None, :-1])
            nll = torch.nn.functional.cross_entropy(logits[0].float(), w[1:], reduction="none").double()
            inside, beyond = nll[:trained], nll[trained:]
            row = [float(inside.sum()), inside.numel(), float(beyond.sum()), beyond.numel()]
            sums += weight * torch.tensor(row, dtype=sums.dtype, device=device)
        within, n_within, beyond, n_beyond = sum_over_ranks(sums, d).tolist()
        return {
            "loss": (within + beyond) / (n_within + n_beyond),
            "loss_within": within / n_within if n_within else None,
            "loss_beyond": beyond / n_beyond if n_beyond else None,
        }

    return evaluate


def run_finetune(
    cfg: FinetuneConfig,
    out: str | Path,
    target: Target | None = None,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The ``ropelab finetune`` job (see the module doc); resumable from ``out/state.pt`` (under FSDP with
    each rank's shards of the model and optimiser in ``out/state.dcp/``).

    ``target``: what to train (:class:`~ropelab.finetune.target.Target`); None loads ``cfg.model`` as a
    transformers model (:class:`~ropelab.finetune.hf_target.HFTarget`) on ``cfg.corpus``.

    Writes ``out/results.jsonl`` (a row per held-out evaluation and a final row, with provenance:
    :mod:`ropelab.finetune.results`) and ``out/curve.jsonl`` (training rows ``{step, loss, lr,
    tokens_per_s}`` and evaluation rows) at every save, and at the end ``out/curve.png``, the model
    (``out/model`` for transformers models, what ``target.save`` writes otherwise: a lab model's
    ``out/model.safetensors``) and ``out/run.json``. Returns the run summary (``run.json``).
    """
    if target is not None and not isinstance(target, Target):
        raise RopeConfigError(f"target must have the members of ropelab.finetune.Target, got {type(target)}")
    if target is None and _lab_name(cfg.model):
        raise RopeConfigError(
            f"--model {cfg.model} is a lab model: pass its target "
            "(ropelab.lab.finetune_target.load_lab_target(model, corpus)) as target="
        )
    d = setup(cfg.device, cfg.strategy)
    try:
        # one job per folder (rank 0 holds the lock for the job; the other ranks are its own processes)
        with folder_lock(out, command=command or None) if d.main else contextlib.nullcontext():
            return _run(
                cfg, Path(out), d, target, progress=progress, stop_after=stop_after, command=command, log=log
            )
    finally:
        teardown(d)


def _lab_name(model: str) -> bool:
    """The names ``ropelab finetune`` reads as the lab's models (built by the lab, not here)."""
    return model == "lab" or model.startswith("lab:") or model.endswith(".safetensors")


def read_summary(path: Path) -> dict[str, Any] | None:
    """``run.json`` of an earlier run in the folder, None if there is none; a damaged one is an error."""
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        summary = None
    if not isinstance(summary, dict) or not isinstance(summary.get("identity"), dict):
        raise RopeConfigError(
            f"{path} is damaged (not a run summary); delete it and run again (a resume state is kept)"
        )
    return summary


def _run(
    cfg: FinetuneConfig,
    out: Path,
    d: Dist,
    target: Target | None,
    *,
    progress: bool,
    stop_after: int | None,
    command: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    summary_path = out / "run.json"
    identity = cfg.identity(d.world)
    earlier = read_summary(summary_path)
    if earlier is not None:
        if earlier["identity"] != identity:
            state = "finished" if earlier.get("finished") else "unfinished"
            mine, theirs = identity, earlier["identity"]
            changed = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
            raise RopeConfigError(
                f"{out} holds another run ({state}, with other settings: {', '.join(changed)}); "
                "delete it or use another --out"
            )
        if earlier.get("finished"):
            if d.main:
                log(f"already finished: {summary_path} (delete {out} to run again)")
            return earlier
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    if target is None:
        from ropelab.finetune.hf_target import load_hf_target

        target = load_hf_target(cfg.model, cfg.corpus)
    windows = target.eval_windows(cfg.eval_length, cfg.eval_windows) if cfg.eval_windows else None
    if d.main:
        rows = cfg.batch * cfg.grad_accum * d.world
        log(
            f"{target.kind} model {cfg.model} (trained to {target.trained_length}); method {cfg.method}; "
            f"length {cfg.length}; {d.world} process(es), {d.strategy}, {d.device}; global batch {rows} x "
            f"{cfg.length} tokens; {cfg.steps} steps"
            + (
                f"; PoSE toward {cfg.pose} ({cfg.pose_chunks} chunks), held out at {cfg.pose}"
                if cfg.pose
                else ""
            )
        )
        if cfg.eval_length <= target.trained_length:
            flag = "--pose" if cfg.pose is not None else "--length"
            log(f"note: {flag} {cfg.eval_length} is not beyond the trained length {target.trained_length}")
    # evaluation calls the model itself: DDP's wrapper is for training; FSDP shards it in place
    evaluate = held_out_eval(target, target.model, windows, d) if windows is not None else None

    curve_path = out / "curve.jsonl"
    results_path = out / "results.jsonl"
    extra = {"command": command, "config": cfg.to_dict(), "world": d.world}
    ident = target.identity()
    dtype = autocast_dtype(cfg, d)
    context = run_context(
        command=COMMAND,
        model=cfg.model,
        model_id=ident["model_id"],
        trained_length=target.trained_length,
        dtype="float32" if dtype is None else str(dtype),
        device=d.device,
        corpus=ident["corpus"],
        threads=cfg.threads,
    )
    unit = settings(cfg, d.world)
    spec = cfg.spec

    def save_rows(result: LoopResult, final: dict[str, Any] | None = None) -> None:
        resolved = target.describe().get("params", {})
        write_results(results_path, result_rows(context, spec, resolved, unit, result, final=final))

    def on_checkpoint(result: LoopResult) -> None:
        write_curve(curve_path, result)
        save_rows(result)

    model, result = train(
        target,
        cfg,
        d,
        state_path=out / "state.pt",
        meta=identity,
        eval_fn=evaluate,
        progress=progress,
        desc=f"finetune {cfg.method}",
        stop_after=stop_after,
        on_checkpoint=on_checkpoint,
    )
    finished = (bool(result.history) and result.history[-1]["step"] == cfg.steps) or cfg.steps == 0
    summary: dict[str, Any] = {
        "identity": identity,
        "finished": finished,
        "target": target.describe(),
        "world": d.world,
        "strategy": d.strategy,
        "device": d.device,
        "steps_done": result.history[-1]["step"] if result.history else result.resumed_from,
        "resumed_from": result.resumed_from,
        "seconds_this_run": round(time.perf_counter() - start, 1),
        "command": command,
        "final_loss": result.final_loss,
        "evals": result.evals,
    }
    if finished:
        state = model_state(model, d) if d.strategy == "fsdp" else None  # every rank gathers
        if d.main:
            write_curve(curve_path, result)
            summary["plot"] = str(plot_curve(out / "curve.png", result, cfg, target.trained_length))
            summary["model"] = str(target.save(out, extra, state=state))
            rates = [h["tokens_per_s"] for h in result.history if h.get("tokens_per_s")]
            summary["tokens_per_s_median"] = sorted(rates)[len(rates) // 2] if rates else None
            save_rows(result, final={"saved": summary["model"]})
            summary["results"] = str(results_path)
            remove_state(out / "state.pt")  # and an FSDP job's shards (state.dcp/)
    if d.main:
        atomic_write(summary_path, json.dumps(summary, indent=1, sort_keys=True))
    return summary
