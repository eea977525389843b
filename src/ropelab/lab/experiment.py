"""``ropelab lab``: every lab model evaluated short and long, RoPE methods zero-shot, fine-tuning at 4x.

The run is a list of *units* (:mod:`ropelab.lab.units`: train one model; evaluate one model with one
method at every length; fine-tune with one method). Every finished unit's rows are appended to
``OUT/results.jsonl``, each stamped with what made it and keyed by everything that decides its numbers
(:mod:`ropelab.lab.records`: checkpoint hash, corpus hash, settings, versions). A run started again
skips every unit whose rows are all there, and a fine-tuning run continues from its last saved
state: killed and restarted, the lab recomputes nothing already done; rows of an older layout are
recomputed. ``report.md``, the plots and the terminal tables are made from the rows
(:mod:`ropelab.lab.report`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ropelab.errors import RopeConfigError, did_you_mean
from ropelab.fsutil import folder_lock
from ropelab.lab.checkpoints import PACKAGE_CHECKPOINTS, load_checkpoint, read_meta
from ropelab.lab.config import LabConfig
from ropelab.lab.data import Corpus, corpus_info, eval_windows, load_corpus
from ropelab.lab.model import TinyDecoder
from ropelab.lab.plan import eval_unit, finetune_unit, train_unit
from ropelab.lab.recipe import LAB_ENCODINGS, LAB_RECIPE, TrainRecipe, checkpoint_path, lab_recipes
from ropelab.lab.records import current_rows, file_sha256, lab_context
from ropelab.lab.units import LabOutcome, Unit, plan_rows, run_units
from ropelab.report import append_jsonl, read_jsonl

__all__ = ["Lab", "LabConfig", "LabOutcome", "run_lab"]


class Lab:
    """Plans and runs the lab into ``out`` (see module doc)."""

    def __init__(
        self,
        out: str | Path,
        config: LabConfig | None = None,
        *,
        checkpoints: str | Path | None = None,
        train: bool = False,
        recipe: TrainRecipe = LAB_RECIPE,
        encodings: Iterable[str] = LAB_ENCODINGS,
        corpus: Corpus | None = None,
        progress: bool = True,
        command: str = "",
    ) -> None:
        self.out = Path(out)
        self.config = config if config is not None else LabConfig()
        self.train = train
        self.recipe = recipe
        self.encodings = tuple(encodings)
        for name in self.encodings:
            if name not in LAB_ENCODINGS:
                raise RopeConfigError(f"unknown lab encoding {name!r}{did_you_mean(name, LAB_ENCODINGS)}")
        if checkpoints is not None:
            self.checkpoints = Path(checkpoints)
        else:
            self.checkpoints = self.out / "checkpoints" if train else PACKAGE_CHECKPOINTS
        self.corpus = corpus or load_corpus()
        self.data = corpus_info(self.corpus)
        self.progress = progress
        self.command = command
        self.results = self.out / "results.jsonl"
        self._windows: dict[int, torch.Tensor] = {}
        self._contexts: dict[tuple[str, str], dict[str, Any]] = {}
        self._rows: dict[str, dict[str, Any]] = {}
        #: the progress bar of the run (None: no bar) and the fine-tuning stop (tests' "kill")
        self.bar: Any = None
        self.finetune_stop_after: int | None = None

    # ------------------------------------------------------------------ helpers
    def windows(self, trained: int) -> torch.Tensor:
        """The held-out windows for models trained at ``trained`` (the same for every model and method)."""
        if trained not in self._windows:
            self._windows[trained] = eval_windows(
                self.corpus, trained * self.config.multiples[-1], self.config.eval_windows
            )
        return self._windows[trained]

    def model_path(self, encoding: str) -> Path:
        return checkpoint_path(self.checkpoints, self.recipe.replace(encoding=encoding))

    def load(self, encoding: str) -> tuple[TinyDecoder, dict[str, Any]]:
        return load_checkpoint(self.model_path(encoding), corpus_sha256=self.data["corpus_sha256"])

    def context(self, encoding: str) -> dict[str, Any] | None:
        """The provenance of ``encoding``'s rows (model_id = the checkpoint's sha256); None while a
        ``--train`` checkpoint does not exist yet."""
        path = self.model_path(encoding)
        if not path.exists():
            if self.train:
                return None
            raise RopeConfigError(
                f"no lab checkpoint {path}: run `ropelab lab --train` (or `make demo` on a checkout with the "
                "committed checkpoints), or point --checkpoints at a folder of `ropelab train` outputs"
            )
        stat = path.stat()
        seen = (str(path), f"{stat.st_mtime_ns}:{stat.st_size}")  # a retrained file is hashed again
        if seen not in self._contexts:
            self._contexts[seen] = lab_context(
                command="lab",
                model=encoding,
                model_id=file_sha256(path),
                trained_length=int(read_meta(path)["train"]["length"]),
                corpus_sha256=str(self.data["corpus_sha256"]),
                threads=self.config.threads,
            )
        return self._contexts[seen]

    def append(self, row: dict[str, Any]) -> None:
        if row["key"] in self._rows:  # e.g. a fine-tuning step evaluated again after a resume
            return
        append_jsonl(self.results, row)
        self._rows[row["key"]] = row

    def lengths(self, trained: int) -> list[int]:
        return [m * trained for m in self.config.multiples]

    # ------------------------------------------------------------------- plan
    def plan(self) -> list[Unit]:
        units: list[Unit] = []
        if self.train:
            for recipe in lab_recipes(self.recipe):
                if recipe.encoding in self.encodings:
                    units.append(train_unit(self, recipe))
        for encoding in self.encodings:
            units.append(eval_unit(self, encoding, "none"))
        if "rope" in self.encodings:
            units.extend(eval_unit(self, "rope", label) for label in self.config.methods)
            if self.config.finetune_steps:
                units.extend(finetune_unit(self, label) for label in self.config.finetune_methods)
        return units

    # -------------------------------------------------------------------- run
    def run(self, *, max_units: int | None = None, finetune_stop_after: int | None = None) -> LabOutcome:
        """Run every unit not already done (at most ``max_units`` of them in this call)."""
        with folder_lock(self.out, command=self.command):  # one process per folder
            return self._run(max_units=max_units, finetune_stop_after=finetune_stop_after)

    def _run(self, *, max_units: int | None, finetune_stop_after: int | None) -> LabOutcome:
        start = time.perf_counter()
        torch.set_num_threads(self.config.threads)
        self._rows = current_rows(read_jsonl(self.results))
        self.finetune_stop_after = finetune_stop_after
        units = self.plan()
        outcome = LabOutcome(self.out, [])
        total = sum(u.weight for u in units)
        self.bar = self._make_bar(total, sum(u.weight for u in units if u.is_done(self._rows)))
        try:
            run_units(units, self._rows, outcome, bar=self.bar, max_units=max_units)
        finally:
            if self.bar is not None:
                self.bar.close()
        outcome.records = plan_rows(units, self._rows)
        outcome.seconds = time.perf_counter() - start
        return outcome

    def _make_bar(self, total: int, initial: int) -> Any:
        """A bar on a terminal; a line every 30 s in a log (``make demo > log``); nothing if quiet."""
        from ropelab.report import progress_bar

        return progress_bar(total, initial=initial, desc="lab", unit="units", disable=not self.progress)


def run_lab(
    out: str | Path,
    config: LabConfig | None = None,
    *,
    checkpoints: str | Path | None = None,
    train: bool = False,
    recipe: TrainRecipe = LAB_RECIPE,
    encodings: Iterable[str] = LAB_ENCODINGS,
    corpus: Corpus | None = None,
    progress: bool = True,
    command: str = "ropelab lab",
    max_units: int | None = None,
    finetune_stop_after: int | None = None,
) -> dict[str, Any]:
    """Run (or finish) the lab into ``out`` and write ``report.md``, the plots and ``results.jsonl``.

    Returns the report's tables, plot paths and the :class:`LabOutcome` under ``"outcome"``.
    """
    from ropelab.lab.report import write_report

    lab = Lab(
        out,
        config,
        checkpoints=checkpoints,
        train=train,
        recipe=recipe,
        encodings=encodings,
        corpus=corpus,
        progress=progress,
        command=command,
    )
    outcome = lab.run(max_units=max_units, finetune_stop_after=finetune_stop_after)
    metas = {}
    for name in lab.encodings:
        path = lab.model_path(name)
        if path.exists():
            metas[name] = read_meta(path)
    result = write_report(
        lab.out,
        outcome.records,
        models=lab.encodings,
        labels=list(lab.config.methods),
        data=lab.data,
        settings=lab.config.to_dict(),
        checkpoints=metas,
        command=command,
        seconds=outcome.seconds,
        complete=outcome.complete,
    )
    result["outcome"] = outcome
    return result
