"""Presets: the RoPE settings of well-known open models, as data, each with the source it was read from.

>>> from ropelab.presets import PRESETS, get_preset
>>> preset = get_preset("llama-3.1-8b")
>>> preset.config["rope_scaling"]["rope_type"]      # the config.json keys, verbatim and read-only
'llama3'
>>> rope = preset.ropes()["all"]      # per layer type (Gemma 3: full_attention, sliding_attention)
>>> inv_freq, scaling = rope.frequencies()
"""

from ropelab.presets.preset import PRESETS, Preset, get_preset, thaw
from ropelab.rope.hf_config import ALL_LAYERS, Geometry, hf_rope_parameters

__all__ = ["ALL_LAYERS", "PRESETS", "Geometry", "Preset", "get_preset", "hf_rope_parameters", "thaw"]
