"""The lab's training loop runs at the speed of a bare hand-written loop: no per-step overhead of its own.

:func:`ropelab.train.loop.run_loop` (called as the lab's ``train_model`` calls it, without a resume file)
against the same steps written out by hand: next batch, loss, ``zero_grad``, ``backward``, gradient
clipping, AdamW step, scheduler step. Both train their own copy of the lab model (RoPE, the committed
recipe's geometry: d_model 128, 4 layers, 4 heads, ~0.69M parameters) on their own
:class:`~ropelab.lab.data.RandomWindows` stream (same seed), B=8 windows of T=128 bytes, one thread.
Before timing, both run the same steps from the same initial weights and must end with bitwise-equal
weights (so they do the same work). Ratio: run_loop tokens/s over the bare loop's, each call 12 optimiser
steps (12 x 8 x 128 tokens); target at least 0.95 (at most 5% overhead).
"""

from __future__ import annotations

import copy
import os
import statistics

import torch

from common import Row, best_ratio, cli, measure, median_ms, ratio, row
from ropelab.lab.data import RandomWindows, load_corpus
from ropelab.lab.model import TinyDecoder
from ropelab.lab.recipe import LAB_RECIPE, build_encoding
from ropelab.train.loop import run_loop, set_determinism
from ropelab.train.optim import adamw, warmup_cosine

SUITE = True
REPEATS = int(os.environ.get("BENCH_REPEATS", "11"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
B, T, STEPS = 8, 128, 12
RECIPE = LAB_RECIPE.replace(encoding="rope", batch_size=B, length=T, steps=1000)

CLAIM = "run_loop tokens/s / bare hand-written loop tokens/s"


class Kit:
    """One model with its optimiser, schedule and batch stream."""

    def __init__(self, model: TinyDecoder, tokens: torch.Tensor) -> None:
        self.model = model
        self.batches = RandomWindows(tokens, batch_size=B, length=T, seed=RECIPE.seed)
        self.optimizer = adamw(model, lr=RECIPE.lr, weight_decay=RECIPE.weight_decay, no_decay=("encoding.",))
        self.scheduler = warmup_cosine(
            self.optimizer, warmup=RECIPE.warmup, steps=RECIPE.steps, min_ratio=RECIPE.min_lr_ratio
        )


def with_run_loop(kit: Kit):
    return run_loop(
        kit.model,
        kit.batches,
        lambda m, batch: m.loss(batch),
        kit.optimizer,
        kit.scheduler,
        steps=STEPS,
        grad_clip=RECIPE.grad_clip,
        log_every=10,
    )


def by_hand(kit: Kit) -> float:
    model, optimizer, scheduler = kit.model, kit.optimizer, kit.scheduler
    model.train()
    for _ in range(STEPS):
        loss = model.loss(kit.batches.next_batch())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), RECIPE.grad_clip)
        optimizer.step()
        scheduler.step()
    return loss.item()


def main() -> list[Row]:
    set_determinism(RECIPE.seed, THREADS)
    tokens = load_corpus().train_tokens()
    model = TinyDecoder(RECIPE.model_config(), build_encoding(RECIPE))
    looped, bare = Kit(model, tokens), Kit(copy.deepcopy(model), tokens)

    # the same work (doubles as the warm-up): STEPS steps each from equal weights end equal
    loop_loss = with_run_loop(looped).final_loss
    bare_loss = by_hand(bare)
    same = all(
        torch.equal(a, b)
        for a, b in zip(looped.model.state_dict().values(), bare.model.state_dict().values(), strict=True)
    )
    assert same and loop_loss == bare_loss, (
        f"run_loop and the bare loop diverged ({loop_loss} vs {bare_loss})"
    )

    last: list = []
    times = measure(
        {"run_loop": lambda: last.append(with_run_loop(looped)), "bare": lambda: by_hand(bare)},
        repeats=REPEATS,
        warmup=0,
    )
    per_call = STEPS * B * T
    tok_s = {v: per_call / statistics.median(times[v]) for v in times}
    ms = " ".join(f"{v}={median_ms(times, v):.0f}" for v in times)
    detail = f"ms per {STEPS} steps: {ms}; tokens/s (median): " + " ".join(
        f"{v}={tok_s[v]:.0f}" for v in tok_s
    )
    reported = [h["tokens_per_s"] for r in last for h in r.history if "tokens_per_s" in h]
    if reported:  # the loop's own figure, where it reports one
        detail += (
            f"; run_loop's own tokens_per_s (median of its history rows) {statistics.median(reported):.0f}"
        )
    detail += "; weights bitwise equal after the same steps"
    shapes = (
        f"lab model rope d128 L4 H4 ({model.num_parameters()} params), B={B} T={T}, fp32, {THREADS} thread"
    )
    # tokens/s ratio = bare time / run_loop time
    return [
        row(
            CLAIM,
            f"{STEPS} steps per call",
            ratio(times, "bare", "run_loop"),
            ">= 0.95",
            shapes,
            detail,
            best=best_ratio(times, "bare", "run_loop"),
        )
    ]


if __name__ == "__main__":
    cli(main)
