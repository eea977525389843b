"""Fine-tuning a model at a longer length with a RoPE method (``ropelab finetune``).

See :mod:`ropelab.finetune.run`; the engine is PyTorch's DDP / FSDP under ``torchrun``.
"""

from ropelab.finetune.config import FinetuneConfig
from ropelab.finetune.run import run_finetune, train

__all__ = ["FinetuneConfig", "run_finetune", "train"]
