"""The llama.cpp command-line flags that ``ropelab export --format llama.cpp`` prints, as
``llama_cpp.Llama(...)`` keyword arguments (llama-cpp-python).

Each flag is translated as llama.cpp's own command line reads it (``common/arg.cpp`` and
``string_parse_kv_override`` in ``common/common.cpp``, llama.cpp commit 0c1e570, the copy vendored in
llama-cpp-python 0.3.36):

==========================  =====================================================================
``--rope-scaling T``        ``rope_scaling_type``: none 0, linear 1, yarn 2 (``enum llama_rope_scaling_type``)
``--rope-scale S``          ``rope_freq_scale = 1 / S``
``--rope-freq-scale F``     ``rope_freq_scale = F``
``--rope-freq-base B``      ``rope_freq_base = B``
``--yarn-orig-ctx N``       ``yarn_orig_ctx = N``
``--yarn-beta-fast X``      ``yarn_beta_fast = X`` (likewise ``--yarn-beta-slow``)
``--yarn-attn-factor X``    ``yarn_attn_factor = X``
``--yarn-ext-factor X``     ``yarn_ext_factor = X``
``-c`` / ``--ctx-size N``   ``n_ctx = N``
``--override-kv K=T:V,...`` ``kv_overrides[K] = V`` typed by T (int, float, bool, str)
==========================  =====================================================================

Any other flag, a flag given twice, a missing or malformed value is refused with ``ValueError``:
a comparison that quietly dropped a flag would compare something else than what export prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: ``enum llama_rope_scaling_type`` in llama.cpp ``include/llama.h``; the command line accepts these three
ROPE_SCALING_TYPES = {"none": 0, "linear": 1, "yarn": 2}


def _positive_float(flag: str, text: str) -> float:
    value = _float(flag, text)
    if value <= 0:
        raise ValueError(f"{flag} needs a positive number, got {text!r}")
    return value


def _float(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{flag} needs a number, got {text!r}") from None


def _int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{flag} needs an integer, got {text!r}") from None


def _scaling_type(flag: str, text: str) -> int:
    if text not in ROPE_SCALING_TYPES:
        raise ValueError(f"{flag} takes one of {', '.join(ROPE_SCALING_TYPES)}, got {text!r}")
    return ROPE_SCALING_TYPES[text]


#: flag -> (keyword argument, value parser)
_FLAGS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "--rope-scaling": ("rope_scaling_type", _scaling_type),
    "--rope-scale": ("rope_freq_scale", lambda f, t: 1.0 / _positive_float(f, t)),
    "--rope-freq-scale": ("rope_freq_scale", _positive_float),
    "--rope-freq-base": ("rope_freq_base", _positive_float),
    "--yarn-orig-ctx": ("yarn_orig_ctx", _int),
    "--yarn-beta-fast": ("yarn_beta_fast", _float),
    "--yarn-beta-slow": ("yarn_beta_slow", _float),
    "--yarn-attn-factor": ("yarn_attn_factor", _float),
    "--yarn-ext-factor": ("yarn_ext_factor", _float),
    "--ctx-size": ("n_ctx", _int),
    "-c": ("n_ctx", _int),
}
KNOWN_FLAGS = (*_FLAGS, "--override-kv")


def parse_override(item: str) -> tuple[str, bool | int | float | str]:
    """``KEY=TYPE:VALUE`` -> (KEY, typed VALUE), as ``string_parse_kv_override`` reads it."""
    key, sep, typed = item.partition("=")
    kind, colon, text = typed.partition(":")
    if not sep or not key or not colon:
        raise ValueError(f"--override-kv needs KEY=TYPE:VALUE, got {item!r}")
    if len(key) >= 128:
        raise ValueError(f"--override-kv key longer than 127 characters: {key[:40]!r}...")
    if kind == "int":
        return key, _int("--override-kv " + key, text)
    if kind == "float":
        return key, _float("--override-kv " + key, text)
    if kind == "bool":
        if text not in ("true", "false"):
            raise ValueError(f"--override-kv {key} bool takes true or false, got {text!r}")
        return key, text == "true"
    if kind == "str":
        if len(text) > 127:
            raise ValueError(f"--override-kv {key} string longer than 127 characters")
        return key, text
    raise ValueError(f"--override-kv {key}: unknown type {kind!r}; llama.cpp takes int, float, bool, str")


def parse_flags(flags: Sequence[str]) -> dict[str, Any]:
    """llama.cpp flags -> ``llama_cpp.Llama`` keyword arguments (see the module docstring).

    ``["--rope-scaling", "yarn", "--rope-scale", "4"]`` -> ``{"rope_scaling_type": 2,
    "rope_freq_scale": 0.25}``. Raises ``ValueError`` on an unknown, repeated or malformed flag.
    """
    out: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    seen: set[str] = set()
    args = list(flags)
    i = 0
    while i < len(args):
        flag = args[i]
        if flag not in KNOWN_FLAGS:
            raise ValueError(f"unknown llama.cpp flag {flag!r}; this parser knows: {', '.join(KNOWN_FLAGS)}")
        if i + 1 >= len(args):
            raise ValueError(f"{flag} needs a value")
        value = args[i + 1]
        i += 2
        if flag == "--override-kv":
            for item in value.split(","):
                key, typed = parse_override(item)
                if key in overrides:
                    raise ValueError(f"--override-kv {key} given twice")
                overrides[key] = typed
            continue
        name, parse = _FLAGS[flag]
        if name in seen:
            raise ValueError(f"{flag} given twice (llama.cpp would keep only the last)")
        seen.add(name)
        out[name] = parse(flag, value)
    if overrides:
        out["kv_overrides"] = overrides
    return out
