"""``ropelab lab``: every lab model evaluated short and long, RoPE methods zero-shot, fine-tuning at 4x.

The run is a list of *units* (train one model; evaluate one model with one method at every length;
fine-tune with one method). Every finished unit's records are appended to ``OUT/results.jsonl``
with a key and a fingerprint of what decided them (checkpoint hash, corpus hash, settings). A run
started again skips every unit whose records are all there with the same fingerprint, and a
fine-tuning run continues from its last saved state: killed and restarted, the lab recomputes
nothing already done. ``report.md``, the plots and the terminal tables are made from the records.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ropelab.errors import RopeConfigError, did_you_mean
from ropelab.fsutil import folder_lock
from ropelab.lab.checkpoints import PACKAGE_CHECKPOINTS, load_checkpoint, read_meta
from ropelab.lab.data import Corpus, corpus_info, eval_windows, load_corpus
from ropelab.lab.evaluate import context_view, length_nll, summarize
from ropelab.lab.methods import (
    DEFAULT_LABELS,
    FINETUNE,
    is_dynamic,
    method_encoding,
    method_params,
    split_label,
)
from ropelab.lab.model import TinyDecoder
from ropelab.lab.recipe import (
    LAB_ENCODINGS,
    LAB_RECIPE,
    TrainRecipe,
    checkpoint_path,
    lab_recipes,
    train_model,
)
from ropelab.report import append_jsonl, read_jsonl


@dataclass(frozen=True)
class LabConfig:
    """What ``ropelab lab`` measures. The defaults fit ``make demo`` (about 4 minutes on 2 cores)."""

    multiples: tuple[int, ...] = (1, 2, 4, 8, 16)
    eval_windows: int = 16
    methods: tuple[str, ...] = DEFAULT_LABELS
    finetune_methods: tuple[str, ...] = FINETUNE
    finetune_multiple: int = 4
    finetune_steps: int = 150
    finetune_batch_size: int = 4
    finetune_lr: float = 5e-4
    finetune_warmup: int = 10
    finetune_eval_every: int = 25
    finetune_seed: int = 1
    threads: int = 2

    def __post_init__(self) -> None:
        """Every setting and every combination checked here, before any unit runs."""
        if not self.multiples or sorted(set(self.multiples)) != list(self.multiples) or self.multiples[0] < 1:
            raise RopeConfigError(f"length multiples must be increasing integers >= 1, got {self.multiples}")
        for label in (*self.methods, *self.finetune_methods):
            split_label(label)
        names = ("eval_windows", "finetune_multiple", "finetune_batch_size", "finetune_eval_every", "threads")
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RopeConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.finetune_steps < 0 or self.finetune_warmup < 0:
            raise RopeConfigError("finetune_steps and finetune_warmup must be >= 0")
        lr = self.finetune_lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise RopeConfigError(f"finetune_lr must be a finite number > 0, got {lr!r}")
        if self.finetune_steps and self.finetune_methods and self.finetune_multiple > self.multiples[-1]:
            # fine-tuning evaluates at finetune_multiple x T on the held-out windows, which are cut to
            # the largest evaluation multiple
            raise RopeConfigError(
                f"finetune_multiple ({self.finetune_multiple}) must be <= the largest length multiple "
                f"({self.multiples[-1]}): fine-tuning is evaluated at {self.finetune_multiple}T on windows "
                f"of the largest multiple; add {self.finetune_multiple} to the multiples (--multiples), "
                "or skip fine-tuning (--finetune-steps 0)"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LabConfig:
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise RopeConfigError(f"unknown lab setting {key!r}{did_you_mean(key, known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Unit:
    """One resumable piece of work: the record keys it produces, a fingerprint, a cost, and how to run it."""

    name: str
    keys: list[str]
    fingerprint: str
    weight: int
    run: Callable[[], None]


@dataclass
class LabOutcome:
    out: Path
    records: list[dict[str, Any]]
    units_run: list[str] = field(default_factory=list)
    units_skipped: list[str] = field(default_factory=list)
    complete: bool = True
    seconds: float = 0.0


def record_key(experiment: str, model: str, method: str, length: int, step: int | None = None) -> str:
    return f"{experiment}/{model}/{method}/{length}" + (f"/{step}" if step is not None else "")


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Lab:
    """Plans and runs the lab into ``out`` (see module doc)."""

    def __init__(
        self,
        out: str | Path,
        config: LabConfig = LabConfig(),
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
        self.config = config
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

    def _done(self) -> dict[str, dict[str, Any]]:
        return {r["key"]: r for r in read_jsonl(self.results) if "key" in r}

    def _append(self, record: dict[str, Any], done: dict[str, dict[str, Any]]) -> None:
        if done.get(record["key"], {}).get("fingerprint") == record["fingerprint"]:
            return
        append_jsonl(self.results, record)
        done[record["key"]] = record

    # ------------------------------------------------------------------- plan
    def plan(self) -> list[Unit]:
        units: list[Unit] = []
        if self.train:
            for recipe in lab_recipes(self.recipe):
                if recipe.encoding in self.encodings:
                    units.append(self._train_unit(recipe))
        for encoding in self.encodings:
            units.append(self._eval_unit(encoding, "none"))
        if "rope" in self.encodings:
            units.extend(self._eval_unit("rope", label) for label in self.config.methods)
            if self.config.finetune_steps:
                units.extend(self._finetune_unit(label) for label in self.config.finetune_methods)
        return units

    def _checkpoint_id(self, encoding: str) -> str:
        """The file's hash; with ``--train``, the recipe's (the file may not exist yet; training is
        deterministic, so the recipe and the corpus decide the weights)."""
        if self.train:
            return fingerprint(self.recipe.replace(encoding=encoding).to_dict(), self.data["corpus_sha256"])
        path = self.model_path(encoding)
        if path.exists():
            return file_sha256(path)
        raise RopeConfigError(
            f"no lab checkpoint {path}: run `ropelab lab --train` (or `make demo` on a checkout with the "
            "committed checkpoints), or point --checkpoints at a folder of `ropelab train` outputs"
        )

    def _train_unit(self, recipe: TrainRecipe) -> Unit:
        key = f"train/{recipe.encoding}"

        def run() -> None:
            summary = train_model(
                recipe, self.checkpoints, corpus=self.corpus, progress=self._bar, threads=self.config.threads
            )
            if summary is not None:
                self._append(
                    {
                        "key": key,
                        "experiment": "train",
                        "model": recipe.encoding,
                        "fingerprint": fp,
                        **summary,
                    },
                    self._records,
                )

        fp = fingerprint(recipe.to_dict(), self.data["corpus_sha256"])
        return Unit(key, [key], fp, recipe.steps, run)

    def _eval_unit(self, encoding: str, label: str) -> Unit:
        trained = self.recipe.length if self.train else None
        ckpt = self._checkpoint_id(encoding)
        if trained is None:
            trained = int(read_meta(self.model_path(encoding))["train"]["length"])
        lengths = [m * trained for m in self.config.multiples]
        keys = [record_key(x, encoding, label, n) for n in lengths for x in ("length", "context")]
        fp = fingerprint(
            ckpt, self.data["corpus_sha256"], self.config.eval_windows, self.config.multiples[-1]
        )
        return Unit(
            f"eval {encoding} {label}",
            keys,
            fp,
            8 * len(lengths),
            lambda: self._evaluate(encoding, label, fp),
        )

    def _finetune_unit(self, label: str) -> Unit:
        c = self.config
        trained = self.recipe.length if self.train else None
        ckpt = self._checkpoint_id("rope")
        if trained is None:
            trained = int(read_meta(self.model_path("rope"))["train"]["length"])
        steps = sorted({*range(0, c.finetune_steps, c.finetune_eval_every), c.finetune_steps})
        length = trained * c.finetune_multiple
        keys = [record_key("finetune", "rope", label, length, s) for s in steps]
        settings = {k: v for k, v in c.to_dict().items() if k.startswith("finetune_")}
        fp = fingerprint(ckpt, self.data["corpus_sha256"], c.eval_windows, c.multiples[-1], settings)
        return Unit(f"finetune {label}", keys, fp, c.finetune_steps, lambda: self._finetune(label, fp))

    # -------------------------------------------------------------------- run
    def run(self, *, max_units: int | None = None, finetune_stop_after: int | None = None) -> LabOutcome:
        """Run every unit not already done (at most ``max_units`` of them in this call)."""
        with folder_lock(self.out, command=self.command):  # one process per folder
            return self._run(max_units=max_units, finetune_stop_after=finetune_stop_after)

    def _run(self, *, max_units: int | None, finetune_stop_after: int | None) -> LabOutcome:
        start = time.perf_counter()
        torch.set_num_threads(self.config.threads)
        self._records = self._done()
        self._finetune_stop_after = finetune_stop_after
        units = self.plan()
        outcome = LabOutcome(self.out, [])

        def is_done(unit: Unit) -> bool:
            return all(self._records.get(k, {}).get("fingerprint") == unit.fingerprint for k in unit.keys)

        todo = [u for u in units if not is_done(u)]
        outcome.units_skipped = [u.name for u in units if is_done(u)]
        self._bar = self._make_bar(sum(u.weight for u in units), sum(u.weight for u in units if is_done(u)))
        try:
            for i, unit in enumerate(todo):
                if max_units is not None and i >= max_units:
                    outcome.complete = False
                    break
                if self._bar is not None:
                    self._bar.set_description(unit.name)
                before = getattr(self._bar, "n", 0)
                unit.run()
                if not is_done(unit):
                    outcome.complete = False
                    break
                if self._bar is not None:
                    self._bar.update(max(0, before + unit.weight - getattr(self._bar, "n", 0)))
                outcome.units_run.append(unit.name)
        finally:
            if self._bar is not None:
                self._bar.close()
        wanted = {k: u.fingerprint for u in units for k in u.keys}
        outcome.records = [r for k, r in self._records.items() if wanted.get(k) == r.get("fingerprint")]
        outcome.seconds = time.perf_counter() - start
        return outcome

    def _make_bar(self, total: int, initial: int) -> Any:
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc="lab",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not sys.stderr.isatty(),
        )

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, encoding: str, label: str, fp: str) -> None:
        start = time.perf_counter()
        model, meta = self.load(encoding)
        trained = int(meta["train"]["length"])
        windows = self.windows(trained)
        n = windows.shape[0]
        lengths = [m * trained for m in self.config.multiples]
        head_dim, base = model.config.head_dim, float(meta["train"]["rope_base"])
        nll: dict[int, torch.Tensor] = {}
        rows: list[dict[str, Any]] = []
        # a method whose parameters do not depend on L (and every encoding as trained) gives the
        # first L positions of one forward over the longest length (causal attention): one pass
        full: torch.Tensor | None = None
        if all(
            method_params(label, trained=trained, length=m)
            == method_params(label, trained=trained, length=lengths[-1])
            for m in lengths
        ):
            try:
                if label != "none":
                    model.encoding = method_encoding(
                        label, head_dim=head_dim, base=base, trained=trained, length=lengths[-1]
                    )
                full = length_nll(model, windows, lengths[-1])
            except RopeConfigError:
                full = None
        for length in lengths:
            common = {
                "model": encoding,
                "method": label,
                "length": length,
                "multiple": length // trained,
                "trained_length": trained,
                "windows": n,
                "fingerprint": fp,
            }
            if label != "none" or encoding == "rope":
                common["params"] = method_params(label, trained=trained, length=length)
            try:
                if label != "none" and full is None:
                    model.encoding = method_encoding(
                        label, head_dim=head_dim, base=base, trained=trained, length=length
                    )
                nll[length] = full[:length] if full is not None else length_nll(model, windows, length)
                ctx = context_view(model, windows, length, trained, full=nll[length])
            except RopeConfigError as err:  # e.g. a learned table asked past its last row
                for x in ("length", "context"):
                    rows.append(
                        {
                            "key": record_key(x, encoding, label, length),
                            "experiment": x,
                            **common,
                            "error": str(err),
                        }
                    )
                continue
            if label != "none" and is_dynamic(label):
                # each position scored at the shortest evaluation length that contains it
                pieces, prev = [], 0
                for shorter in lengths:
                    if shorter > length:
                        break
                    if shorter in nll:
                        pieces.append(nll[shorter][prev:shorter])
                        prev = shorter
                seq = torch.cat(pieces)
            else:
                seq = nll[length]
            rows.append(
                {
                    "key": record_key("length", encoding, label, length),
                    "experiment": "length",
                    **common,
                    **summarize(seq, n, trained),
                }
            )
            rows.append(
                {
                    "key": record_key("context", encoding, label, length),
                    "experiment": "context",
                    **common,
                    **ctx,
                }
            )
        seconds = round(time.perf_counter() - start, 2)
        for row in rows:
            self._append({**row, "unit_seconds": seconds}, self._records)

    # ------------------------------------------------------------ fine-tuning
    def _finetune(self, label: str, fp: str) -> None:
        """One fine-tuning curve: ``ropelab finetune``'s code path, with the lab's evaluation."""
        from ropelab.finetune import FinetuneConfig, train
        from ropelab.lab.finetune_target import LabTarget
        from ropelab.train.distributed import Dist

        c = self.config
        model, meta = self.load("rope")
        trained = int(meta["train"]["length"])
        length = trained * c.finetune_multiple
        windows = self.windows(trained)
        recipe = meta["train"]
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
        params = method_params(label, trained=trained, length=length)

        def evaluate(step: int) -> dict[str, Any]:
            nll = length_nll(model, windows, length)
            s = summarize(nll, windows.shape[0], trained)
            # does the model use the longer context? the same last T tokens given T and given 4T
            s["loss_last_short"] = context_view(model, windows, trained, trained)["loss_last"]
            s["loss_last"] = context_view(model, windows, length, trained, full=nll)["loss_last"]
            record = {
                "key": record_key("finetune", "rope", label, length, step),
                "experiment": "finetune",
                "model": "rope",
                "method": label,
                "length": length,
                "multiple": c.finetune_multiple,
                "trained_length": trained,
                "step": step,
                "windows": windows.shape[0],
                "params": params,
                "fingerprint": fp,
                **s,
            }
            self._append(record, self._records)
            return {"loss": s["loss"]}

        state = self.out / "finetune" / f"{label}.state.pt"
        _, result = train(
            LabTarget(model, meta, self.corpus),
            cfg,
            Dist(),
            state_path=state,
            meta={"fingerprint": fp},
            eval_fn=evaluate,
            progress=self._bar,
            desc=f"finetune {label}",
            stop_after=self._finetune_stop_after,
            no_decay=("encoding.",),
        )
        if result.history and result.history[-1]["step"] == c.finetune_steps:
            state.unlink(missing_ok=True)


def run_lab(
    out: str | Path,
    config: LabConfig = LabConfig(),
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
        labels=list(config.methods),
        data=lab.data,
        settings=config.to_dict(),
        checkpoints=metas,
        command=command,
        seconds=outcome.seconds,
        complete=outcome.complete,
    )
    result["outcome"] = outcome
    return result
