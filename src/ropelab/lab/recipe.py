"""How a lab model is trained: one frozen recipe, one ``ropelab train`` command per encoding.

Every field of :class:`TrainRecipe` is a ``ropelab train`` flag of the same name (``lr`` ->
``--lr``, ``batch_size`` -> ``--batch-size``), so :meth:`TrainRecipe.command` prints the exact
command that reproduces a checkpoint, and ``checkpoints/RECIPE.md`` is generated from
:data:`LAB_RECIPE` (a test keeps the two equal).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from ropelab.encodings.base import PositionEncoding
from ropelab.errors import RopeConfigError, did_you_mean
from ropelab.fsutil import folder_lock
from ropelab.lab.checkpoints import build_encoding as build_named_encoding
from ropelab.lab.checkpoints import read_meta, save_checkpoint
from ropelab.lab.data import Corpus, RandomWindows, corpus_info, eval_windows, load_corpus
from ropelab.lab.evaluate import length_view
from ropelab.lab.model import ModelConfig, TinyDecoder
from ropelab.train.loop import run_loop, set_determinism
from ropelab.train.optim import adamw, warmup_cosine

#: torch threads the committed checkpoints were trained with. The thread count changes float
#: rounding only (matmul blocking), so other counts give the same numbers within noise.
COMMITTED_THREADS = 1

#: the encodings the lab trains, in report order
LAB_ENCODINGS = ("sinusoidal", "learned", "nope", "rope", "alibi", "xpos")


@dataclass(frozen=True)
class TrainRecipe:
    """Everything that decides a trained lab model (with the Python version's stdlib as data)."""

    encoding: str = "rope"
    length: int = 128
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 3
    rope_base: float = 10000.0
    max_multiple: int = 16

    def __post_init__(self) -> None:
        if self.encoding not in LAB_ENCODINGS:
            raise RopeConfigError(
                f"unknown lab encoding {self.encoding!r}{did_you_mean(self.encoding, LAB_ENCODINGS)}; "
                f"choose one of: {', '.join(LAB_ENCODINGS)}"
            )
        for name in ("length", "steps", "batch_size", "layers", "heads", "mlp_ratio", "max_multiple"):
            if getattr(self, name) < 1:
                raise RopeConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.length < 2:
            raise RopeConfigError(f"length must be >= 2, got {self.length}")
        if not 0 < self.lr < 1:
            raise RopeConfigError(f"lr must be in (0, 1), got {self.lr}")
        if self.warmup < 0 or self.seed < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise RopeConfigError("warmup and seed must be >= 0 and min_lr_ratio in [0, 1]")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise RopeConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise RopeConfigError(
                f"grad_clip must be a finite number >= 0 (0: no clipping), got {self.grad_clip}"
            )
        if not (math.isfinite(self.rope_base) and self.rope_base > 1):
            raise RopeConfigError(f"rope_base must be a finite number > 1, got {self.rope_base}")
        self.model_config()  # geometry checks

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainRecipe:
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise RopeConfigError(f"unknown recipe key {key!r}{did_you_mean(key, known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> TrainRecipe:
        return replace(self, **changes)

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            d_model=self.d_model, n_layers=self.layers, n_heads=self.heads, mlp_ratio=self.mlp_ratio
        )

    def command(self, out: str = "src/ropelab/lab/checkpoints", threads: int = COMMITTED_THREADS) -> str:
        """The ``ropelab train`` command line that trains this recipe into ``out``."""
        flags = [f"--{f.name.replace('_', '-')} {getattr(self, f.name)!s}" for f in fields(self)]
        return "ropelab train " + " ".join(flags) + f" --threads {threads} --out {out}"


#: the committed lab models: this recipe for each of :data:`LAB_ENCODINGS`
LAB_RECIPE = TrainRecipe()


def lab_recipes(base: TrainRecipe = LAB_RECIPE) -> list[TrainRecipe]:
    return [base.replace(encoding=name) for name in LAB_ENCODINGS]


def encoding_kwargs(recipe: TrainRecipe) -> dict[str, Any]:
    """Constructor arguments of the recipe's encoding for :func:`ropelab.encodings.make_encoding`."""
    cfg = recipe.model_config()
    name = recipe.encoding
    if name in ("rope", "xpos"):
        return {"head_dim": cfg.head_dim, "base": recipe.rope_base}
    if name == "sinusoidal":
        return {"d_model": cfg.d_model}
    if name == "learned":
        return {"d_model": cfg.d_model, "max_positions": recipe.length * recipe.max_multiple}
    if name == "alibi":
        return {"n_heads": cfg.n_heads}
    return {}


def build_encoding(recipe: TrainRecipe) -> PositionEncoding:
    return build_named_encoding(recipe.encoding, **encoding_kwargs(recipe))


def checkpoint_path(out: str | Path, recipe: TrainRecipe) -> Path:
    return Path(out) / f"{recipe.encoding}.safetensors"


def is_trained(path: Path, recipe: TrainRecipe) -> bool:
    """True if ``path`` is a finished checkpoint of exactly this recipe."""
    if not path.exists():
        return False
    try:
        return read_meta(path).get("train") == recipe.to_dict()
    except (RopeConfigError, ValueError, OSError):
        return False


def train_model(
    recipe: TrainRecipe,
    out: str | Path,
    *,
    corpus: Corpus | None = None,
    progress: Any = True,
    stop_after: int | None = None,
    checkpoint_every: int = 100,
    threads: int | None = 2,
    eval_windows_count: int = 32,
) -> dict[str, Any] | None:
    """Train one lab model into ``out/ENCODING.safetensors``; resume from ``out/ENCODING.state.pt``.

    Returns a summary dict, or None if stopped early by ``stop_after`` (the state is saved).
    A finished checkpoint of the same recipe is not trained again.
    """
    with folder_lock(out):  # one process per folder: two would race on the state and the checkpoint
        return _train_model(
            recipe,
            out,
            corpus=corpus,
            progress=progress,
            stop_after=stop_after,
            checkpoint_every=checkpoint_every,
            threads=threads,
            eval_windows_count=eval_windows_count,
        )


def _train_model(
    recipe: TrainRecipe,
    out: str | Path,
    *,
    corpus: Corpus | None,
    progress: Any,
    stop_after: int | None,
    checkpoint_every: int,
    threads: int | None,
    eval_windows_count: int,
) -> dict[str, Any] | None:
    path = checkpoint_path(out, recipe)
    if is_trained(path, recipe):
        meta = read_meta(path)
        return {"path": str(path), "skipped": True, **meta.get("result", {})}
    corpus = corpus or load_corpus()
    set_determinism(recipe.seed, threads)
    model = TinyDecoder(recipe.model_config(), build_encoding(recipe))
    batches = RandomWindows(
        corpus.train_tokens(), batch_size=recipe.batch_size, length=recipe.length, seed=recipe.seed
    )
    optimizer = adamw(model, lr=recipe.lr, weight_decay=recipe.weight_decay, no_decay=("encoding.",))
    scheduler = warmup_cosine(
        optimizer, warmup=recipe.warmup, steps=recipe.steps, min_ratio=recipe.min_lr_ratio
    )
    val = eval_windows(corpus, recipe.length, eval_windows_count)

    def validation(step: int) -> dict[str, Any]:
        return {"val_loss": length_view(model, val, recipe.length, recipe.length)["loss"]}

    state_path = path.with_name(f"{recipe.encoding}.state.pt")
    start = time.perf_counter()
    result = run_loop(
        model,
        batches,
        lambda m, batch: m.loss(batch),
        optimizer,
        scheduler,
        steps=recipe.steps,
        state_path=state_path,
        checkpoint_every=checkpoint_every,
        grad_clip=recipe.grad_clip,
        log_every=10,
        eval_fn=validation,
        eval_every=max(1, recipe.steps // 5),
        meta={"train": recipe.to_dict()},
        progress=progress,
        desc=f"train {recipe.encoding}",
        stop_after=stop_after,
    )
    if not result.history or result.history[-1]["step"] < recipe.steps:
        return None
    summary = {
        "steps": recipe.steps,
        "train_loss": sum(h["loss"] for h in result.history[-10:]) / len(result.history[-10:]),
        "val_loss": result.evals[-1]["val_loss"],
        "seconds": round(time.perf_counter() - start, 1),
        "parameters": model.num_parameters(),
    }
    meta = {
        "train": recipe.to_dict(),
        "command": recipe.command(str(out), threads=threads or torch.get_num_threads()),
        "threads": threads or torch.get_num_threads(),
        "data": corpus_info(corpus),
        "result": summary,
        "curve": {"loss": result.history[::5], "val": result.evals},
    }
    save_checkpoint(path, model, meta)
    state_path.unlink(missing_ok=True)
    return {"path": str(path), "skipped": False, **summary}


def recipe_markdown(recipe: TrainRecipe = LAB_RECIPE) -> str:
    """The text of ``checkpoints/RECIPE.md``: how the committed models were made (generated, tested)."""
    lines = [
        "# How the lab checkpoints were made",
        "",
        "Generated from `ropelab.lab.recipe.LAB_RECIPE` by `recipe_markdown()` in the same module;",
        "a test keeps this file equal to the code. Each command trains one model, deterministic for",
        "its seed, the Python version's standard library and the torch thread count (these used",
        f"{COMMITTED_THREADS}; another count changes float rounding only). It writes `ENCODING.safetensors`:",
        "fp16 weights with the model, encoding, recipe, corpus hash and final losses as JSON metadata.",
        "`ropelab lab --train` runs the same recipe into `OUT/checkpoints` and evaluates those.",
        "",
        "```bash",
        *(r.command() for r in lab_recipes(recipe)),
        "```",
        "",
        f"Model: {recipe.layers} pre-norm blocks, d_model {recipe.d_model}, {recipe.heads} heads, MLP "
        f"{recipe.mlp_ratio}x, tied byte embeddings (vocabulary 256), no biases, no dropout. Data: random "
        f"windows of {recipe.length} + 1 bytes from the training split of the standard library's top-level "
        f"`*.py` files, batch {recipe.batch_size}, {recipe.steps} steps "
        f"({recipe.steps * recipe.batch_size * recipe.length / 1e6:.1f}M tokens). AdamW (0.9, 0.95), peak lr "
        f"{recipe.lr}, {recipe.warmup} warm-up steps, cosine to {recipe.min_lr_ratio} x peak, weight decay "
        f"{recipe.weight_decay} on matrices except the encoding's, gradient clip {recipe.grad_clip}. The "
        f"learned table has {recipe.max_multiple} x {recipe.length} rows; rows past {recipe.length} are "
        "never trained and keep their initial values.",
        "",
    ]
    return "\n".join(lines)
