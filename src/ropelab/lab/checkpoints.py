"""Lab checkpoints: safetensors weights (fp16 by default) with the full config as JSON metadata.

A checkpoint file holds the model's parameters under their ``state_dict`` names and one metadata
entry, ``"ropelab"``: a JSON object with ``model`` (:class:`~ropelab.lab.model.ModelConfig`),
``encoding`` (the encoding's ``config()``, enough to rebuild it with
:func:`ropelab.encodings.make_encoding`), ``train`` (the recipe), ``data`` (Python version and
corpus hash) and ``result`` (final loss, steps). The weights are stored in fp16 to keep the six
committed models small; they are read back as float32.
"""

from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path
from typing import Any

import torch

from ropelab.encodings.base import PositionEncoding
from ropelab.errors import RopeConfigError
from ropelab.fsutil import atomic_write
from ropelab.lab.model import ModelConfig, TinyDecoder

#: where the committed lab models live (installed as package data)
PACKAGE_CHECKPOINTS = Path(__file__).with_name("checkpoints")
_META_KEY = "ropelab"


def _safetensors() -> Any:
    try:
        import safetensors.torch as st
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise RopeConfigError("lab checkpoints need safetensors: pip install safetensors") from None
    return st


def make_encoding_from_config(config: dict[str, Any]) -> PositionEncoding:
    """Rebuild a position encoding from its ``config()`` dict."""
    cfg = dict(config)
    name = cfg.pop("name", None)
    if name is None:
        raise RopeConfigError(f"encoding config {config!r} has no 'name'")
    return build_encoding(name, **cfg)


def build_encoding(name: str, **kwargs: Any) -> PositionEncoding:
    """:func:`ropelab.encodings.make_encoding`, tolerating a registry that cannot build a
    parameterless ``NoPE`` by name (the class has no ``__init__`` of its own to inspect)."""
    from ropelab.encodings import NoPE, make_encoding

    if name == "nope" and not kwargs:
        try:
            return make_encoding(name)
        except RopeConfigError:
            return NoPE()
    return make_encoding(name, **kwargs)


def save_checkpoint(
    path: str | Path, model: TinyDecoder, meta: dict[str, Any], *, dtype: torch.dtype = torch.float16
) -> Path:
    """Write ``model``'s parameters (in ``dtype``) and ``meta`` plus the model/encoding config."""
    st = _safetensors()
    path = Path(path)
    tensors = {
        name: (t.detach().to(dtype) if t.is_floating_point() else t.detach()).contiguous()
        for name, t in model.state_dict().items()
    }
    full = {"model": model.config.to_dict(), "encoding": model.encoding.config(), **meta}
    # serialised in memory and written by us: atomic, and the mode follows the user's umask
    # (safetensors' save_file creates its files 0600)
    return atomic_write(path, st.save(tensors, metadata={_META_KEY: json.dumps(full, sort_keys=True)}))


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, without loading the weights."""
    _safetensors()
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise RopeConfigError(f"no checkpoint at {path}")
    with safe_open(str(path), framework="pt") as fh:
        raw = (fh.metadata() or {}).get(_META_KEY)
    if raw is None:
        raise RopeConfigError(f"{path} is not a ropelab lab checkpoint (no '{_META_KEY}' metadata)")
    return json.loads(raw)


def load_checkpoint(path: str | Path, *, corpus_sha256: str | None = None) -> tuple[TinyDecoder, dict]:
    """(model in float32 and eval mode, metadata). Warns if the corpus or Python version differs."""
    st = _safetensors()
    meta = read_meta(path)
    model = TinyDecoder(ModelConfig.from_dict(meta["model"]), make_encoding_from_config(meta["encoding"]))
    tensors = st.load_file(str(path))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k in dict(model.named_parameters())]:
        raise RopeConfigError(
            f"{path} does not match its model config (missing {missing}, unexpected {unexpected})"
        )
    model.eval()
    data = meta.get("data", {})
    if corpus_sha256 is not None and data.get("corpus_sha256") not in (None, corpus_sha256):
        warnings.warn(
            f"{Path(path).name} was trained on the standard library of Python {data.get('python')}; "
            f"this is Python {platform.python_version()} with a different corpus: numbers can differ a "
            "little",
            stacklevel=2,
        )
    return model, meta
