"""What transformers, vLLM and llama.cpp compute for one model config, next to ropelab's exact reference.

``check_config(config_dict)`` gives one row per stack (frequencies, attention factor, maximum length,
switching rule, verdict); ``capability_table()`` says which ropelab method each stack expresses exactly.
"""

from ropelab.stacks.check import CheckReport, StackRow, check_config

__all__ = ["CheckReport", "StackRow", "check_config"]
