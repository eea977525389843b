"""Training loops: one loop for ``ropelab train``, the lab's fine-tuning and ``ropelab finetune``."""

from ropelab.train.loop import BatchSource, LoopResult, load_state, run_loop, save_state, set_determinism

__all__ = ["BatchSource", "LoopResult", "load_state", "run_loop", "save_state", "set_determinism"]
