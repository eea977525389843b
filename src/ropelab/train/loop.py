"""One training loop, generic over the model, the batches and the optimiser.

``run_loop`` knows nothing about position encodings or corpora: it takes a model, a
:class:`BatchSource`, a ``loss_fn(model, batch) -> scalar``, an optimiser and a scheduler, and
runs steps ``start .. steps-1``. Every ``checkpoint_every`` steps it writes a resume state
(model, optimiser, scheduler, torch and Python RNG, the batch source's position, the history)
atomically to ``state_path``; started again with the same ``state_path`` it continues from there,
and the result equals an uninterrupted run (bitwise on one machine with one thread count).
An optional ``eval_fn(step) -> dict`` runs at step 0, every ``eval_every`` steps and at the end,
with the model in eval mode and the RNG untouched. Under ``torchrun`` the same loop drives a DDP or
FSDP model (:mod:`ropelab.train.distributed`): rank 0 writes the state, every rank reads it.

Under FSDP the model and optimiser are not in ``state_path``: every rank writes its own shards through
``torch.distributed.checkpoint`` to ``STATE.dcp/step-N/`` (:func:`shards_folder`), and the small file
``state_path``, written by rank 0 once every shard is down, names that folder: it is the commit point,
so a save killed half-way leaves the previous state whole (its folder is removed only after the new
``state_path`` names the new one).
"""

from __future__ import annotations

import math
import pickle
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ropelab.errors import RopeConfigError
from ropelab.fsutil import atomic_open
from ropelab.train.distributed import (
    Dist,
    autocast,
    barrier,
    load_model_state,
    load_optimizer_state,
    load_shards,
    mean_over_ranks,
    model_state,
    no_sync,
    optimizer_state,
    save_shards,
    sum_over_ranks,
)

#: bump when the layout of the resume state changes
STATE_VERSION = 1


class BatchSource(Protocol):
    """Where batches come from, with a position that can be saved and restored."""

    def next_batch(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class LoopResult:
    """What a run did: ``history`` rows ``{step, loss, lr}`` and ``evals`` rows ``{step, ...}``."""

    steps: int
    resumed_from: int
    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None


def set_determinism(seed: int, threads: int | None = 2) -> None:
    """Seed torch and Python and fix the thread count.

    On CPU the kernels a small model uses are deterministic for a fixed thread count, so this is
    enough for bitwise-repeatable runs (the tests check it). ``torch.use_deterministic_algorithms``
    is not called: it imports the compiler stack, seconds per process, for nothing on CPU.
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` with ``torch.save`` atomically (temporary file, fsync, rename): never half a file.

    A state holds only tensors and plain Python values (dicts, lists, tuples, numbers, strings), so
    :func:`load_state` can read it with ``weights_only=True``.
    """
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)


def load_state(path: str | Path) -> dict[str, Any] | None:
    """A state written by :func:`save_state`, or None if there is none.

    Read with ``torch.load(weights_only=True)``: a file that would run code on loading (a planted
    pickle) is refused without running it; an empty or truncated one is a one-line error.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise RopeConfigError(
                f"{path} is not a ropelab resume state (it holds Python objects, which loading would run); "
                "not loaded: delete it to start again"
            ) from None
        raise RopeConfigError(f"{path} is damaged ({_first_line(err)}); delete it to start again") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise RopeConfigError(f"{path} is damaged ({_first_line(err)}); delete it to start again") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise RopeConfigError(f"{path} is a resume state of another version; delete it to start again")
    return state


def shards_folder(state_path: str | Path) -> Path:
    """Where an FSDP job's shards of the resume state go: ``STATE.dcp`` next to ``STATE.pt``."""
    return Path(state_path).with_suffix(".dcp")


def remove_state(state_path: str | Path) -> None:
    """Delete a resume state: the file and, for an FSDP job, its shards."""
    Path(state_path).unlink(missing_ok=True)
    shutil.rmtree(shards_folder(state_path), ignore_errors=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def _all_finite(model: nn.Module, d: Dist) -> bool:
    """True if every parameter of ``model`` is finite (on every rank: FSDP holds shards)."""
    bad = torch.zeros((), dtype=torch.float32, device=d.device)
    with torch.no_grad():
        for p in model.parameters():
            local = p.to_local() if hasattr(p, "to_local") else p  # an FSDP2 shard (DTensor)
            if local.numel() and not bool(torch.isfinite(local).all()):
                bad += 1
                break
    return float(sum_over_ranks(bad, d).item()) == 0.0


def _progress(progress: Any, total: int, initial: int, desc: str) -> tuple[Any, bool]:
    """(bar, owned): an existing tqdm-like bar, a new one on stderr, or None."""
    if progress is None or progress is False:
        return None, False
    if progress is True:
        from ropelab.report.progress import progress_bar

        return progress_bar(total, initial=initial, desc=desc, unit="steps"), True
    return progress, False


def _micro_batches(batch: Any, parts: int) -> list[Any]:
    """Split a tuple of tensors (or one tensor) along dim 0 into ``parts`` equal micro-batches."""
    if parts == 1:
        return [batch]
    tensors = batch if isinstance(batch, (tuple, list)) else (batch,)
    rows = tensors[0].shape[0]
    if rows % parts:
        raise RopeConfigError(f"a batch of {rows} rows does not split into {parts} accumulation steps")
    chunks = [t.chunk(parts) for t in tensors]
    out = [tuple(c[i] for c in chunks) for i in range(parts)]
    return out if isinstance(batch, (tuple, list)) else [o[0] for o in out]


def run_loop(
    model: nn.Module,
    batches: BatchSource,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    steps: int,
    state_path: str | Path | None = None,
    checkpoint_every: int = 0,
    grad_clip: float | None = 1.0,
    log_every: int = 10,
    eval_fn: Callable[[int], dict[str, Any]] | None = None,
    eval_every: int = 0,
    meta: dict[str, Any] | None = None,
    progress: Any = None,
    desc: str = "train",
    stop_after: int | None = None,
    grad_accum: int = 1,
    dist: Dist | None = None,
    tokens_per_step: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    on_checkpoint: Callable[[LoopResult], None] | None = None,
) -> LoopResult:
    """Train ``model`` for ``steps`` optimiser steps, resuming from ``state_path`` if it exists.

    Args:
        loss_fn: ``loss_fn(model, batch)`` -> scalar loss to minimise (the mean over the batch).
        state_path: resume state file (written every ``checkpoint_every`` steps and at the end).
        grad_clip: clip the global gradient norm (None: no clipping).
        log_every: record ``{step, loss, lr, tokens_per_s}`` every this many steps (and the last).
        eval_fn: called with the number of steps done at 0, every ``eval_every`` and at the end
            (on every rank: under FSDP a forward pass needs them all).
        meta: JSON-able description of the run saved in the state; a state with other ``meta``
            is refused (it belongs to another run).
        progress: True for a tqdm bar on stderr, an existing bar to advance, or None.
        stop_after: stop (with a saved state) after this many steps of *this call*: for tests
            and budgets; the next call continues.
        grad_accum: split each batch into this many micro-batches, one backward each, one
            optimiser step (the batch source gives this rank's whole share of the step).
        dist: the process's place in a ``torchrun`` job (:mod:`ropelab.train.distributed`);
            ``model`` is then the DDP/FSDP-wrapped model. Rank 0 writes the state and the bar.
        tokens_per_step: tokens of one optimiser step over all ranks, for ``tokens_per_s``
            (default: the elements of the first tensor of each local batch times the ranks).
        autocast_dtype: run forward passes under ``torch.autocast`` with this dtype (bf16).
        on_checkpoint: called on rank 0 after each saved state with the result so far.
    """
    if steps < 0:
        raise RopeConfigError(f"steps must be >= 0, got {steps}")
    if grad_accum < 1:
        raise RopeConfigError(f"grad_accum must be >= 1, got {grad_accum}")
    if grad_clip is not None and not (math.isfinite(grad_clip) and grad_clip >= 0):
        raise RopeConfigError(f"grad_clip must be a finite number >= 0 (0: no clipping), got {grad_clip}")
    d = dist or Dist()
    result = LoopResult(steps=steps, resumed_from=0)
    state = load_state(state_path) if state_path is not None else None
    if state is not None:
        if meta is not None and state.get("meta") != meta:
            raise RopeConfigError(
                f"{state_path} was written by another run ({state.get('meta')}); "
                "delete it or use another output folder"
            )
        if "shards" in state:  # an FSDP job's: each rank reads its own shards
            if d.strategy != "fsdp":
                raise RopeConfigError(f"{state_path} is an FSDP job's (sharded) state; resume it with FSDP")
            assert state_path is not None
            load_shards(shards_folder(state_path) / state["shards"], model, optimizer, d)
        else:
            load_model_state(model, state["model"], d)
            load_optimizer_state(model, optimizer, state["optimizer"], d)
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        batches.load_state_dict(state["batches"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        result.resumed_from = int(state["step"])
        result.history = list(state["history"])
        result.evals = list(state["evals"])

    last_saved: list[int | None] = [result.resumed_from if state is not None else None]

    def stopped(problem: str) -> RopeConfigError:
        if state_path is not None and last_saved[0] is not None:
            kept = f"the last good state (step {last_saved[0]}) is kept in {state_path}"
        else:
            kept = "no state was saved"
        return RopeConfigError(f"{problem}: training stopped; {kept}; lower the learning rate")

    def ensure_finite(step: int) -> None:
        """Never evaluate, save or return weights that an update made NaN or infinite."""
        if not _all_finite(model, d):
            raise stopped(f"the weights are not finite after step {step} (check weight_decay and grad_clip)")

    def checkpoint(step: int) -> None:
        ensure_finite(step)
        if state_path is None:
            return
        full: dict[str, Any] = {"version": STATE_VERSION, "step": step, "meta": meta}
        if d.strategy == "fsdp":  # every rank writes its shards; the file names them
            full["shards"] = f"step-{step}"
            save_shards(shards_folder(state_path) / full["shards"], model, optimizer, d)
        else:  # DDP: every rank holds the whole model; one process: plain state dicts
            full["model"] = model_state(model, d)
            full["optimizer"] = optimizer_state(model, optimizer, d)
        full.update(
            scheduler=scheduler.state_dict() if scheduler is not None else None,
            batches=batches.state_dict(),
            rng={"torch": torch.get_rng_state(), "python": random.getstate()},
            history=result.history,
            evals=result.evals,
        )
        if d.main:
            save_state(state_path, full)
            if "shards" in full:  # the file now names the new shards: the older ones can go
                for old in shards_folder(state_path).iterdir():
                    if old.name != full["shards"]:
                        shutil.rmtree(old, ignore_errors=True)
            if on_checkpoint is not None:
                on_checkpoint(result)
        last_saved[0] = step
        barrier(d)

    def evaluate(step: int) -> None:
        if eval_fn is None or any(e["step"] == step for e in result.evals):
            return
        rng = torch.get_rng_state()
        was_training = model.training
        model.eval()
        with torch.no_grad(), autocast(autocast_dtype, d):
            row = {"step": step, **eval_fn(step)}
        model.train(was_training)
        torch.set_rng_state(rng)
        result.evals.append(row)

    start = result.resumed_from
    bar, owned = _progress(progress if d.main else None, steps, start, desc)
    model.train()
    if start == 0:
        evaluate(0)
    done_here = 0
    window_tokens, window_seconds = 0, 0.0  # training work only: evaluation and saving excluded
    try:
        for step in range(start, steps):
            if stop_after is not None and done_here >= stop_after:
                checkpoint(step)
                return result
            step_start = time.perf_counter()
            batch = batches.next_batch()
            micro = _micro_batches(batch, grad_accum)
            optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), dtype=torch.float32, device=d.device)
            for i, part in enumerate(micro):
                with no_sync(model, i < grad_accum - 1), autocast(autocast_dtype, d):
                    loss = loss_fn(model, part)
                    if grad_accum > 1:
                        loss = loss / grad_accum
                loss.backward()
                total += loss.detach().float()
            loss_value = float(mean_over_ranks(total, d).item())
            if not math.isfinite(loss_value):
                raise stopped(f"loss is {loss_value} at step {step + 1}")
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step_seconds = time.perf_counter() - step_start
            window_seconds += step_seconds
            done = step + 1
            done_here += 1
            first = batch[0] if isinstance(batch, (tuple, list)) else batch
            step_tokens = tokens_per_step or first.numel() * d.world
            window_tokens += step_tokens
            if done % max(log_every, 1) == 0 or done == steps:
                rate = window_tokens / window_seconds if window_seconds > 0 else float("nan")
                result.history.append(
                    {"step": done, "loss": loss_value, "lr": float(lr), "tokens_per_s": round(rate, 1)}
                )
                window_tokens, window_seconds = 0, 0.0
            if (eval_every and done % eval_every == 0) or done == steps:
                ensure_finite(done)
                evaluate(done)
            if bar is not None:
                bar.update(1)
                if owned:
                    rate_now = step_tokens / step_seconds if step_seconds > 0 else 0.0
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.1e}", tok_s=f"{rate_now:.0f}")
            if (checkpoint_every and done % checkpoint_every == 0) or done == steps:
                checkpoint(done)
    finally:
        if owned:
            bar.close()
    return result
