"""Command-line pieces shared by the commands: RoPE method flags and the --out folder."""

from __future__ import annotations

import argparse
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from ropelab.cli.flags import add_out
from ropelab.errors import RopeConfigError
from ropelab.registry import REGISTRY, MethodSpec, parse_methods
from ropelab.rope import (
    Rope,
    extended_layer_types,
    get_method,
    is_per_layer,
    parse_hf_config,
    ropes_from_hf,
)

#: flag dest -> RopeConfig field, for the method parameters a user can set on the command line.
_PARAM_FLAGS: dict[str, str] = {
    "factor": "factor",
    "base": "base",
    "head_dim": "head_dim",
    "partial_rotary_factor": "partial_rotary_factor",
    "original_max_position_embeddings": "original_max_position_embeddings",
    "max_position_embeddings": "max_position_embeddings",
    "attention_factor": "attention_factor",
    "beta_fast": "beta_fast",
    "beta_slow": "beta_slow",
    "mscale": "mscale",
    "mscale_all_dim": "mscale_all_dim",
    "short_factor": "short_factor",
    "long_factor": "long_factor",
    "low_freq_factor": "low_freq_factor",
    "high_freq_factor": "high_freq_factor",
    "mixed_exponent": "mixed_exponent",
}
#: transformers 5.24 standardize_rope_params: the rope types whose original length a config-level
#: original_max_position_embeddings (Phi-3) overrides
#: parameters that describe the model rather than the method: every method takes them
_MODEL_PARAMS = {"base", "head_dim", "partial_rotary_factor", "original_max_position_embeddings"}


def float_list(text: str) -> list[float]:
    """``1.0,1.2,...`` or ``@file.json`` (a JSON list) -> list of floats."""
    try:
        if text.startswith("@"):
            value = json.loads(Path(text[1:]).read_text(encoding="utf-8"))
            if not isinstance(value, list):
                raise ValueError
            return [float(v) for v in value]
        return [float(v) for v in text.split(",") if v.strip()]
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"no such file: {text[1:]}") from None
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: not a text file") from None
    except OSError as err:  # a folder, no permission
        raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {err.strerror}") from None
    except (ValueError, TypeError, json.JSONDecodeError):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers or @file.json with a list, got {text!r}"
        ) from None


def add_method_args(parser: argparse.ArgumentParser, *, several: bool = False) -> None:
    """The ``--method`` flag and every RoPE parameter flag."""
    g = parser.add_argument_group("RoPE method")
    g.add_argument(
        "--method",
        help="method name from `ropelab methods`" + (" (comma-separated for several)" if several else ""),
    )
    g.add_argument("--factor", type=float, help="scale factor s >= 1 (new length / trained length)")
    g.add_argument("--base", type=float, help="RoPE base (rope_theta), default 10000")
    g.add_argument("--head-dim", type=int, help="channels per attention head, default 64")
    g.add_argument("--partial-rotary-factor", type=float, help="fraction of head_dim that rotates")
    g.add_argument(
        "--original-max-position-embeddings",
        "--trained-length",
        type=int,
        dest="original_max_position_embeddings",
        help="L0: the length the model was trained on",
    )
    g.add_argument("--max-position-embeddings", type=int, help="the extended length a config advertises")
    g.add_argument("--attention-factor", type=float, help="explicit cos/sin multiplier (YaRN, LongRoPE)")
    g.add_argument("--beta-fast", type=float, help="YaRN ramp bound in rotations (default 32)")
    g.add_argument("--beta-slow", type=float, help="YaRN ramp bound in rotations (default 1)")
    g.add_argument("--mscale", type=float, help="YaRN (DeepSeek) mscale")
    g.add_argument("--mscale-all-dim", type=float, help="YaRN (DeepSeek) mscale_all_dim")
    g.add_argument("--no-truncate", action="store_true", help="YaRN: do not floor/ceil the correction range")
    g.add_argument("--short-factor", type=float_list, help="LongRoPE short factors: a,b,... or @file.json")
    g.add_argument("--long-factor", type=float_list, help="LongRoPE long factors: a,b,... or @file.json")
    g.add_argument("--low-freq-factor", type=float, help="Llama-3 low_freq_factor (default 1)")
    g.add_argument("--high-freq-factor", type=float, help="Llama-3 high_freq_factor (default 4)")
    g.add_argument("--mixed-exponent", type=float, help="NTK-mixed exponent c (default 0.625)")
    g.add_argument("--log-n", action="store_true", help="scale queries by max(1, log n / log L0)")
    g.add_argument("--hf-config", type=Path, help="a transformers config.json: model geometry and its RoPE")
    g.add_argument(
        "--preset", help="a known model's config by name, in place of --hf-config (see `ropelab presets`)"
    )


def read_hf_config(path: Path) -> dict[str, Any]:
    """Read a transformers ``config.json`` and parse it with :func:`parse_hf_config`."""
    check_hf_config_file(path)
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise RopeConfigError(f"--hf-config: no such file: {path}") from None
    except json.JSONDecodeError as err:
        raise RopeConfigError(
            f"--hf-config: {path} is not valid JSON ({err.msg}, line {err.lineno})"
        ) from None
    return parse_hf_config(cfg, where=f"--hf-config: {path}")


def preset_config(name: str) -> dict[str, Any]:
    """The published ``config.json`` subset of the preset ``name`` (see ``ropelab presets``), as a dict."""
    from ropelab.presets import get_preset
    from ropelab.presets.preset import thaw

    return thaw(get_preset(name).config)


def hf_config_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The parsed config of ``--hf-config FILE`` or ``--preset NAME`` (one of them at most), else None."""
    path, preset = getattr(args, "hf_config", None), getattr(args, "preset", None)
    if path is not None and preset is not None:
        raise RopeConfigError("give --hf-config or --preset, not both")
    if path is not None:
        return read_hf_config(path)
    if preset is not None:
        return parse_hf_config(preset_config(preset), where=f"preset {preset}")
    return None


# ------------------------------------------------- --hf-config validation (kept apart from the reader)
def check_hf_config_file(path: Path) -> None:
    """Refuse a --hf-config that is a folder or not UTF-8 text, in one line."""
    if path.is_dir():
        raise RopeConfigError(f"--hf-config: {path} is a folder; give the config.json inside it")
    try:
        path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return  # the reader says "no such file"
    except UnicodeDecodeError:
        raise RopeConfigError(
            f"--hf-config: {path} is not a text file (a config.json is JSON text)"
        ) from None
    except OSError as err:
        raise RopeConfigError(f"--hf-config: cannot read {path}: {err.strerror}") from None


def check_out_dir(path: Path, flag: str = "--out") -> None:
    """Refuse an output folder that cannot be made or written, before any work starts.

    It must be a folder or not exist yet; its nearest existing ancestor must be a writable folder;
    no name in it may be longer than the file system allows.
    """
    path = Path(path).expanduser().absolute()
    shown = str(path) if len(str(path)) <= 100 else str(path)[:60] + "..." + str(path)[-20:]
    longest = max(len(part.encode()) for part in path.parts)
    too_long = RopeConfigError(
        f"{flag} {shown} is too long for the file system (its longest name has {longest} bytes)"
    )

    def kind(p: Path) -> str | None:
        """What is at ``p``: "dir", "other", "under-file" or None (nothing); refuses too long names."""
        try:
            return "dir" if stat.S_ISDIR(os.stat(p).st_mode) else "other"
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return "under-file"
        except OSError as err:
            if err.errno == errno.ENAMETOOLONG:
                raise too_long from None
            raise RopeConfigError(f"{flag} {shown}: {err.strerror}") from None

    if kind(path) == "other":
        raise RopeConfigError(f"{flag} {shown} exists and is not a folder; give a folder")
    anchor = path
    while kind(anchor) in (None, "under-file") and anchor != anchor.parent:
        anchor = anchor.parent
    if kind(anchor) != "dir":
        raise RopeConfigError(f"{flag} {shown}: {anchor} is a file, so no folder can be made under it")
    try:
        name_max = os.pathconf(anchor, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if longest > name_max:  # a name below the existing part: stat never reached it
        raise too_long
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise RopeConfigError(f"{flag} {shown}: {anchor} is not writable")


def method_specs_from_args(args: argparse.Namespace) -> list[MethodSpec]:
    """``--method`` through the one grammar (:func:`ropelab.parse_methods`; aliases such as ``pi``
    accepted): the frequency methods a RoPE table can hold. ``--log-n`` is read with the other flags."""
    text = (getattr(args, "method", None) or "").strip()
    if not text:
        return []
    specs = parse_methods(text)
    for spec in specs:
        if spec.kind != "frequency":
            what = "an attention-level method" if spec.kind == "attention" else "a lab encoding"
            raise RopeConfigError(
                f"{spec.method!r} is {what}, not a RoPE frequency method: this command works on the cos/sin "
                f"table (use it with `ropelab eval --method {spec.method}` or ropelab.hf.extend)"
            )
        if spec.multiplier != 1.0:
            raise RopeConfigError(f"{spec.label!r}: '*A' is the lab's factor policy; give --factor instead")
    return specs


def ropes_from_args(args: argparse.Namespace) -> list[Rope]:
    """The :class:`Rope` of each section of :func:`named_ropes_from_args`."""
    return [rope for _, rope in named_ropes_from_args(args)]


def named_ropes_from_args(args: argparse.Namespace) -> list[tuple[str | None, Rope]]:
    """(layer type or ``None``, :class:`Rope`): one per ``--method`` name, with the flags given.

    With several methods, a flag a method does not take is left out for that method (so
    ``--method linear,ntk,dynamic-yarn --factor 4`` works); with one method it is an error.

    A ``--hf-config`` whose ``rope_parameters`` is nested by layer type gives one entry per layer type
    without ``--method``; with ``--method``, the method replaces the RoPE of the layer types that
    :func:`ropelab.rope.extended_layer_types` names (Gemma 3: ``full_attention``), on that layer type's
    geometry, and the other layer types keep the config's RoPE.
    """
    given = {
        field: getattr(args, dest)
        for dest, field in _PARAM_FLAGS.items()
        if getattr(args, dest, None) is not None
    }
    if getattr(args, "no_truncate", False):
        given["truncate"] = False
    if getattr(args, "log_n", False):
        given["log_n"] = True
    names = method_specs_from_args(args)
    hf = hf_config_from_args(args)
    if hf is not None and is_per_layer(hf["rope_parameters"], hf["layer_types"]):
        return _per_layer_ropes(hf, names, given)
    if hf is not None and not names:
        params = dict(hf["rope_parameters"])
        params.update(
            {k: v for k, v in given.items() if k not in ("head_dim", "base", "max_position_embeddings")}
        )
        return [
            (
                None,
                Rope.from_hf(
                    params,
                    head_dim=given.get("head_dim", hf["head_dim"]),
                    rope_theta=given.get("base", hf["rope_theta"]),
                    partial_rotary_factor=hf["partial_rotary_factor"],
                    max_position_embeddings=given.get(
                        "max_position_embeddings", hf["max_position_embeddings"]
                    ),
                ),
            )
        ]
    if not names:
        raise RopeConfigError("--method is required (see `ropelab methods`), or give --hf-config or --preset")
    base: dict[str, Any] = {}
    if hf is not None:
        base = {"head_dim": hf["head_dim"], "base": float(hf["rope_theta"])}
        if hf["partial_rotary_factor"]:
            base["partial_rotary_factor"] = hf["partial_rotary_factor"]
        trained = (
            hf["rope_parameters"].get("original_max_position_embeddings") or hf["max_position_embeddings"]
        )
        if trained:
            base["original_max_position_embeddings"] = int(trained)
    base.update(given)
    return [(None, rope) for rope in _method_ropes(names, base)]


def _method_ropes(specs: list[MethodSpec], base: dict[str, Any]) -> list[Rope]:
    """One :class:`Rope` per spec: the flags' parameters, then the spec's own (``yarn(factor=4)``)."""
    ropes = []
    for spec in specs:
        name = str(REGISTRY[spec.method].impl)
        params = dict(base)
        if len(specs) > 1:
            accepted = get_method(name).params | _MODEL_PARAMS | {"log_n"}
            params = {k: v for k, v in params.items() if k in accepted}
        params.update(spec.params)
        if spec.log_n:
            params["log_n"] = True
        ropes.append(Rope(name, **params))
    return ropes


def _per_layer_ropes(
    hf: dict[str, Any], names: list[MethodSpec], given: dict[str, Any]
) -> list[tuple[str | None, Rope]]:
    stated = given.pop("max_position_embeddings", hf["max_position_embeddings"])
    layers = ropes_from_hf(
        hf["rope_parameters"],
        head_dim=given.pop("head_dim", hf["head_dim"]),
        rope_theta=hf["rope_theta"],
        partial_rotary_factor=hf["partial_rotary_factor"],
        max_position_embeddings=stated,
        layer_types=hf["layer_types"],
    )
    if not names:
        if given:
            raise RopeConfigError(
                f"--hf-config has a RoPE per layer type ({', '.join(layers)}): give --method to choose the "
                f"method of the {' and '.join(extended_layer_types(layers))} layers, instead of "
                f"--{next(iter(given)).replace('_', '-')} alone"
            )
        return list(layers.items())
    out: list[tuple[str | None, Rope]] = []
    for layer_type in extended_layer_types(layers):
        cfg = layers[layer_type].config
        base: dict[str, Any] = {"head_dim": cfg.head_dim, "base": cfg.base}
        if cfg.partial_rotary_factor != 1.0:
            base["partial_rotary_factor"] = cfg.partial_rotary_factor
        if cfg.trained_length:
            base["original_max_position_embeddings"] = int(cfg.trained_length)
        base.update(given)
        out.extend((layer_type, rope) for rope in _method_ropes(names, base))
    kept = [(lt, rope) for lt, rope in layers.items() if lt not in extended_layer_types(layers)]
    return out + kept


def add_out_arg(parser: argparse.ArgumentParser, default: str) -> None:
    """``--out DIR`` (:func:`ropelab.cli.flags.add_out`)."""
    add_out(parser, default)
