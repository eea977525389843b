"""transformers integration: apply a RoPE method to a causal LM, load models and corpora.

Needs the ``hf`` extra (transformers, gguf, accelerate).
"""

from ropelab.hf.extend import ATTENTION_METHODS, Extension, extend, make_extension, model_geometry, restore

__all__ = ["ATTENTION_METHODS", "Extension", "extend", "make_extension", "model_geometry", "restore"]
