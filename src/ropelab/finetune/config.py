"""The settings of one fine-tuning run (``ropelab finetune`` and the lab's fine-tuning units)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ropelab.data.pose import DEFAULT_CHUNKS, POSE_TEXT, check_pose
from ropelab.errors import RopeConfigError
from ropelab.registry import MethodSpec, entry, parse_method

SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
#: the spellings ``precision`` also takes (``--dtype``'s names) -> one of :data:`PRECISIONS`
_PRECISION_NAMES = {"bfloat16": "bf16", "float32": "fp32"}


@dataclass(frozen=True)
class FinetuneConfig:
    """What to fine-tune, with which method, at which length, and how.

    ``method``: a method in the registry's grammar (:func:`ropelab.registry.parse_method`: aliases
    such as ``pi`` accepted, ``+log-n``, the lab's ``*A``), stored as its canonical label
    (``pi`` -> ``linear``); ``params`` and ``factor`` are set on top of it (:attr:`spec`).
    ``precision``: ``auto`` (bf16 autocast on a GPU with bf16), ``bf16`` or ``fp32`` (``bfloat16``
    and ``float32`` are read as those two).

    ``pose``: PoSE (Zhu et al. 2023, arXiv 2309.10400; :mod:`ropelab.data.pose`): train on windows of
    ``length`` tokens whose position ids skip ahead, chunk by chunk (``pose_chunks``), to cover
    ``[0, pose)``, the text contiguous or skipped with the ids (``pose_text``); the method is then applied
    for ``pose`` tokens (a factor defaults to ``pose / trained length``) and the held-out evaluation runs
    at ``pose`` (:attr:`eval_length`). None: no PoSE.

    ``batch`` is the micro-batch of one process; one optimiser step sees
    ``batch * grad_accum * world_size`` windows of ``length`` tokens (the *global batch*), and the
    data of step i depends only on (``seed``, i, global batch): the same for 1 process with
    ``grad_accum = K`` as for K processes with ``grad_accum = 1``.
    """

    length: int
    model: str = "smollm2"
    method: str = "yarn"
    factor: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    corpus: str = "stdlib"
    steps: int = 100
    lr: float = 2e-5
    batch: int = 1
    grad_accum: int = 1
    warmup: int = 10
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    save_every: int = 50
    eval_every: int = 25
    eval_windows: int = 4
    log_every: int = 1
    seed: int = 0
    precision: str = "auto"
    grad_checkpointing: bool | None = None  # None: on for transformers models, off for the lab's
    strategy: str = "auto"
    device: str = "auto"
    threads: int | None = None
    # last, so that positional arguments keep their places
    pose: int | None = None
    pose_chunks: int = DEFAULT_CHUNKS
    pose_text: str = "contiguous"

    def __post_init__(self) -> None:
        if self.length < 2:
            raise RopeConfigError(f"--length must be >= 2, got {self.length}")
        for name in ("steps", "warmup", "save_every", "eval_every"):
            if getattr(self, name) < 0:
                raise RopeConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("batch", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise RopeConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.pose is not None:
            check_pose(self.length, self.pose, self.pose_chunks)
        elif self.pose_chunks != DEFAULT_CHUNKS or self.pose_text != "contiguous":
            raise RopeConfigError("--pose-chunks and --pose-text need --pose TARGET (the target length)")
        if self.pose_text not in POSE_TEXT:
            choices = ", ".join(POSE_TEXT)
            raise RopeConfigError(f"--pose-text must be one of {choices}, got {self.pose_text!r}")
        if self.eval_windows < 0:
            raise RopeConfigError(f"--eval-windows must be >= 0, got {self.eval_windows}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise RopeConfigError(f"--lr must be a finite number > 0, got {self.lr}")
        if self.factor is not None and not (math.isfinite(self.factor) and self.factor >= 1):
            raise RopeConfigError(f"--factor must be a finite number >= 1, got {self.factor}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise RopeConfigError(f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise RopeConfigError(
                f"--grad-clip must be a finite number >= 0 (0: no clipping), got {self.grad_clip}"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise RopeConfigError(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.schedule not in SCHEDULES:
            raise RopeConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        precision = _PRECISION_NAMES.get(self.precision, self.precision)
        if precision not in PRECISIONS:
            raise RopeConfigError(
                f"--dtype {self.precision} is not for fine-tuning: choose auto, bfloat16 (bf16 autocast, "
                "float32 weights) or float32"
            )
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "method", parse_method(self.method).label)
        object.__setattr__(self, "params", dict(self.params))
        _ = self.spec  # the whole method parsed now: a bad one is refused before any work

    @property
    def eval_length(self) -> int:
        """The length the method is set for and the held-out loss is measured at: ``pose`` under PoSE,
        else ``length``."""
        return self.length if self.pose is None else self.pose

    @property
    def spec(self) -> MethodSpec:
        """The method with ``params`` and ``factor`` set: what a target applies."""
        spec = parse_method(self.method, **self.params)
        if spec.kind == "encoding":
            raise RopeConfigError(
                f"{spec.method!r} is a position encoding a lab model is trained with, not a method to "
                "fine-tune with; see `ropelab methods`"
            )
        if self.factor is not None:
            if not entry(spec.method).takes_factor:
                raise RopeConfigError(f"method {spec.method!r} does not take --factor")
            spec = spec.replace(factor=self.factor)
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self, world: int) -> dict[str, Any]:
        """What a resume state must match: everything that changes the numbers (not the logging)."""
        skip = {"save_every", "log_every", "threads"}
        if self.pose is None:  # a run without PoSE keeps the identity it had before PoSE existed
            skip |= {"pose", "pose_chunks", "pose_text"}
        keep = {k: v for k, v in self.to_dict().items() if k not in skip}
        return {**keep, "world": world}
