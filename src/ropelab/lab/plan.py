"""The lab's plan: the :class:`~ropelab.lab.units.Unit` of each job (train a model, evaluate a method,
fine-tune with a method), bound to the lab that runs them (:class:`Lab`, a protocol) for its folder,
checkpoints and rows. Each unit's keys and rows come from :mod:`ropelab.lab.records`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from ropelab.lab.finetuning import finetune_curve
from ropelab.lab.recipe import TrainRecipe, train_model
from ropelab.lab.records import eval_key, finetune_key, lab_context, method_row, train_key, train_row
from ropelab.lab.units import Unit
from ropelab.lab.zero_shot import evaluate_method


class Lab(Protocol):
    """What a unit needs of :class:`ropelab.lab.experiment.Lab` (a protocol: the plan does not import the
    class that runs it)."""

    out: Path
    checkpoints: Path
    config: Any
    corpus: Any
    data: dict[str, Any]
    bar: Any
    finetune_stop_after: int | None

    def windows(self, trained: int) -> Any: ...

    def model_path(self, encoding: str) -> Path: ...

    def load(self, encoding: str) -> tuple[Any, dict[str, Any]]: ...

    def context(self, encoding: str) -> dict[str, Any] | None: ...

    def append(self, row: dict[str, Any]) -> None: ...

    def lengths(self, trained: int) -> list[int]: ...


def train_unit(lab: Lab, recipe: TrainRecipe) -> Unit:
    """Train ``recipe``'s model into the lab's checkpoint folder (``--train``); one ``train`` row."""
    # the recipe and the corpus decide the weights (training is deterministic): the key holds no file
    plan_context = lab_context(
        command="lab",
        model=recipe.encoding,
        model_id="",
        trained_length=recipe.length,
        corpus_sha256=str(lab.data["corpus_sha256"]),
        threads=lab.config.threads,
    )
    key = train_key(plan_context, recipe.to_dict())

    def run() -> None:
        summary = train_model(
            recipe, lab.checkpoints, corpus=lab.corpus, progress=lab.bar, threads=lab.config.threads
        )
        if summary is not None:
            context = lab.context(recipe.encoding)
            assert context is not None
            lab.append(train_row(context, key=key, experiment="train", recipe=recipe.to_dict(), **summary))

    return Unit(f"train {recipe.encoding}", lambda: [key], recipe.steps, run)


def eval_unit(lab: Lab, encoding: str, label: str) -> Unit:
    """Evaluate ``encoding``'s model with ``label`` at every length: a ``length`` and a ``context`` row
    per length (:func:`ropelab.lab.zero_shot.evaluate_method`)."""
    c = lab.config
    lab.context(encoding)  # a missing checkpoint is refused here, before any work

    def keys() -> list[str] | None:
        ctx = lab.context(encoding)
        if ctx is None:
            return None
        return [
            eval_key(ctx, label, x, n, windows=c.eval_windows, span=c.multiples[-1])
            for n in lab.lengths(ctx["trained_length"])
            for x in ("length", "context")
        ]

    def run() -> None:
        start = time.perf_counter()
        model, meta = lab.load(encoding)
        ctx = lab.context(encoding)
        assert ctx is not None
        trained = int(meta["train"]["length"])
        rows = evaluate_method(
            model,
            label=label,
            trained=trained,
            rope_base=float(meta["train"]["rope_base"]),
            windows=lab.windows(trained),
            lengths=lab.lengths(trained),
        )
        seconds = round(time.perf_counter() - start, 2)
        for row in rows:
            length, numbers = row["length"], {k: v for k, v in row.items() if k != "length"}
            key = eval_key(
                ctx, label, row["experiment"], length, windows=c.eval_windows, span=c.multiples[-1]
            )
            lab.append(
                method_row(
                    ctx, label, key=key, trained=trained, length=length, **numbers, unit_seconds=seconds
                )
            )

    return Unit(f"eval {encoding} {label}", keys, 8 * len(c.multiples), run)


def _finetune_key(lab: Lab, ctx: dict[str, Any], label: str, step: int | None) -> str:
    c = lab.config
    length = ctx["trained_length"] * c.finetune_multiple
    settings = {k: v for k, v in c.finetune_settings().items() if k != "finetune_methods"}
    return finetune_key(
        ctx, label, length, step, windows=c.eval_windows, span=c.multiples[-1], settings=settings
    )


def finetune_unit(lab: Lab, label: str) -> Unit:
    """Fine-tune the RoPE model with ``label`` (:func:`ropelab.lab.finetuning.finetune_curve`): one
    ``finetune`` row per evaluation step; resumable from ``OUT/finetune/LABEL-KEY.state.pt``."""
    c = lab.config
    lab.context("rope")
    steps = sorted({*range(0, c.finetune_steps, c.finetune_eval_every), c.finetune_steps})

    def keys() -> list[str] | None:
        ctx = lab.context("rope")
        return None if ctx is None else [_finetune_key(lab, ctx, label, s) for s in steps]

    def run() -> None:
        ctx = lab.context("rope")
        assert ctx is not None
        trained = int(ctx["trained_length"])
        length = trained * c.finetune_multiple
        windows = lab.windows(trained)
        curve = _finetune_key(lab, ctx, label, None)
        settings = {k: v for k, v in c.finetune_settings().items() if k != "finetune_methods"}

        def on_eval(step: int, numbers: dict[str, Any]) -> None:
            row = method_row(
                ctx,
                label,
                key=_finetune_key(lab, ctx, label, step),
                trained=trained,
                length=length,
                experiment="finetune",
                multiple=c.finetune_multiple,
                step=step,
                windows=windows.shape[0],
                finetune_settings=settings,
                **numbers,
            )
            lab.append(row)

        finetune_curve(
            lab.model_path("rope"),
            label,
            c,
            windows=windows,
            corpus_sha256=str(lab.data["corpus_sha256"]),
            state=lab.out / "finetune" / f"{label}-{curve[:12]}.state.pt",
            state_meta={"key": curve},
            on_eval=on_eval,
            progress=lab.bar,
            stop_after=lab.finetune_stop_after,
        )

    return Unit(f"finetune {label}", keys, c.finetune_steps, run)
