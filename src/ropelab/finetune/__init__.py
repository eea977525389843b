"""Fine-tuning a model at a longer length with a RoPE method (``ropelab finetune``).

See :mod:`ropelab.finetune.run`; the engine is PyTorch's DDP / FSDP under ``torchrun``. What is
trained is a :class:`Target` (:mod:`ropelab.finetune.target`): :class:`HFTarget` for transformers
models; the lab's tiny models bring their own (``ropelab.lab.finetune_target``). Nothing here imports
the lab.

    from ropelab.finetune import FinetuneConfig, run_finetune
    summary = run_finetune(FinetuneConfig(length=16384, model="smollm2", method="yarn"), "runs/ft")
"""

from ropelab.finetune.config import FinetuneConfig
from ropelab.finetune.hf_target import HFTarget, load_hf_target
from ropelab.finetune.results import render_report
from ropelab.finetune.run import run_finetune, train
from ropelab.finetune.target import Target, cross_entropy

__all__ = [
    "FinetuneConfig",
    "HFTarget",
    "Target",
    "cross_entropy",
    "load_hf_target",
    "render_report",
    "run_finetune",
    "train",
]
