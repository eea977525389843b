"""`Preset`: the RoPE settings of a published model, with the public source they were read from.

Each preset is one JSON file in ``data/`` (shipped as package data): ``name``, ``model_id`` (the Hugging
Face Hub id), ``source`` (the URL, or repository path and commit, the values were read from), ``note``
(what a reader should know about that source) and ``config``: the RoPE-relevant keys of the model's
``config.json``, copied verbatim (numbers and factor lists included), never edited or completed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from types import MappingProxyType
from typing import Any

from ropelab.errors import RopeConfigError, did_you_mean
from ropelab.rope import Rope
from ropelab.rope.hf_config import Geometry, geometry, hf_rope_parameters, layer_types, ropes

_FIELDS = ("name", "model_id", "source", "note", "config")


def _freeze(value: Any) -> Any:
    """Read-only view of parsed JSON: dicts become mappingproxies, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain ``dict`` / ``list`` copy of a frozen value (for JSON and for code that edits it)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Preset:
    """A known model's RoPE configuration.

    Attributes:
        name: short lowercase key, e.g. ``"llama-3.1-8b"``.
        model_id: the Hugging Face Hub id, e.g. ``"meta-llama/Llama-3.1-8B-Instruct"``.
        source: the URL (or repository path + commit) the values were read from.
        config: read-only mapping, the RoPE-relevant subset of the model's ``config.json`` as published.
        note: what to know about the source (a copy of the original, a revision, a quirk of the model).
    """

    name: str
    model_id: str
    source: str
    config: Mapping[str, Any] = field(hash=False)
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.config, MappingProxyType):
            object.__setattr__(self, "config", _freeze(self.config))

    @cached_property
    def geometry(self) -> Geometry:
        """Rotary head dim and advertised maximum length, read as transformers reads the config."""
        return geometry(self.config)

    def rope_parameters(self) -> dict[str, dict[str, Any]]:
        """Per layer type, the transformers-5 ``rope_parameters`` (see :mod:`ropelab.rope.hf_config`)."""
        return hf_rope_parameters(thaw(self.config))

    def layer_types(self) -> list[str]:
        """The layer type of every layer, for models whose layers differ (``[]`` otherwise)."""
        return layer_types(self.config)

    @cached_property
    def _ropes(self) -> dict[str, Rope]:
        return ropes(thaw(self.config))

    def ropes(self) -> dict[str, Rope]:
        """Per layer type (``"all"`` when every layer is the same), the :class:`ropelab.Rope`."""
        return dict(self._ropes)

    def summary(self) -> list[dict[str, Any]]:
        """One row per layer type: RoPE type, base, factor, trained length L0, maximum length, head dims."""
        rows = []
        for layer_type, rope in self.ropes().items():
            cfg = rope.config
            rows.append(
                {
                    "name": self.name,
                    "model": self.model_id,
                    "layers": layer_type,
                    "rope type": cfg.method,
                    "base": cfg.base,
                    "factor": cfg.scale,
                    "L0": cfg.trained_length,
                    "max length": self.geometry.max_position_embeddings,
                    "head_dim": cfg.head_dim,
                    "rotary_dim": rope.rotary_dim,
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The preset as its JSON file holds it."""
        return {
            "name": self.name,
            "model_id": self.model_id,
            "source": self.source,
            "note": self.note,
            "config": thaw(self.config),
        }


def _load() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for entry in sorted(resources.files("ropelab.presets").joinpath("data").iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        raw = json.loads(entry.read_text(encoding="utf-8"))
        unknown = set(raw) - set(_FIELDS)
        if unknown or not raw.get("source"):
            raise RopeConfigError(f"preset file {entry.name}: unknown keys {sorted(unknown)} or no source")
        preset = Preset(**raw)
        presets[preset.name] = preset
    return dict(sorted(presets.items()))


#: name -> :class:`Preset`, every model in ``data/``.
PRESETS: Mapping[str, Preset] = MappingProxyType(_load())


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or a :class:`ropelab.RopeConfigError` with a "did you mean"."""
    try:
        return PRESETS[name]
    except KeyError:
        raise RopeConfigError(
            f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; see `ropelab presets` for the list"
        ) from None
