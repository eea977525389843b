"""What ``ropelab lab`` measures: :class:`LabConfig`, every setting checked before any unit runs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ropelab.errors import RopeConfigError, did_you_mean
from ropelab.lab.methods import DEFAULT_LABELS, FINETUNE, canonical_label


@dataclass(frozen=True)
class LabConfig:
    """What ``ropelab lab`` measures. The defaults fit ``make demo`` (about 4 minutes on 2 cores).

    ``methods`` and ``finetune_methods`` take any spelling of :mod:`ropelab.registry` (``pi``,
    ``dynamic-ntk+log-n``, ``ntk*4``) and hold the canonical labels (``linear``, ``dynamic+log-n``),
    repeats dropped.
    """

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
        for name in ("methods", "finetune_methods"):
            labels = tuple(dict.fromkeys(canonical_label(label) for label in getattr(self, name)))
            object.__setattr__(self, name, labels)
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

    def finetune_settings(self) -> dict[str, Any]:
        """The ``finetune_*`` settings (every one changes a fine-tuning number)."""
        return {k: v for k, v in self.to_dict().items() if k.startswith("finetune_")}
