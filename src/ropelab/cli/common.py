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
from ropelab.rope.core import ALL_LAYERS, Rope, extended_layer_types, is_per_layer, ropes_from_hf
from ropelab.rope.frequencies import get_method
from ropelab.rope.hf_config import geometry, hf_rope_parameters, layer_types

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


def parse_hf_config(cfg: Any, *, where: str = "config") -> dict[str, Any]:
    """Geometry and RoPE parameters of a transformers config dict (pure: no file access).

    Returns ``head_dim``, ``rope_parameters`` (flat, or nested by layer type as transformers v5 writes
    it), ``rope_theta`` and ``partial_rotary_factor`` (config-level defaults), ``max_position_embeddings``
    and ``layer_types``. Follows transformers 5.24: a multimodal config's ``text_config``; ``rope_scaling``
    as the legacy name of ``rope_parameters``; ``head_dim`` else ``hidden_size / num_attention_heads``, but
    DeepSeek's rotary dim ``qk_rope_head_dim``; Phi-3's ``original_max_position_embeddings`` outside the
    dict wins; Gemma 3's legacy ``rope_local_base_freq`` makes a nested dict (scaling on
    ``full_attention``, plain RoPE with that base on ``sliding_attention``, as ``Gemma3TextConfig`` does).
    """
    if not isinstance(cfg, dict):
        raise RopeConfigError(f"{where} must hold a JSON object")
    cfg = cfg.get("text_config", cfg) if "rope_theta" not in cfg and "rope_parameters" not in cfg else cfg
    check_hf_config_values(cfg, where)
    raw = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(raw, dict):
        raise RopeConfigError(f"{where}: rope_parameters must be a JSON object, got {raw!r}")
    try:  # the library's one reading of config.json (ropelab.rope.hf_config)
        geo = geometry(cfg)
        per_layer = hf_rope_parameters(cfg)
    except RopeConfigError as err:
        raise RopeConfigError(f"{where}: {err}") from None
    rope_theta = cfg.get("rope_theta")
    partial = cfg.get("partial_rotary_factor", cfg.get("rotary_pct"))
    if list(per_layer) == [ALL_LAYERS]:
        rope_parameters = per_layer[ALL_LAYERS]
        rope_theta = rope_parameters.pop("rope_theta", None) or rope_theta
        partial = rope_parameters.pop("partial_rotary_factor", None) or partial
    else:
        rope_parameters = per_layer
    types = layer_types(cfg)
    return {
        "head_dim": geo.head_dim,
        "rope_parameters": rope_parameters,
        "rope_theta": rope_theta or 10000.0,
        "partial_rotary_factor": partial,
        "max_position_embeddings": geo.max_position_embeddings,
        "layer_types": types or None,
    }


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


def check_hf_config_values(cfg: dict[str, Any], where: str) -> None:
    """The geometry and RoPE entries a config is read for have the JSON types transformers expects."""

    def bad(key: str, want: str) -> RopeConfigError:
        return RopeConfigError(f"{where}: {key} must be {want}, got {cfg[key]!r}")

    for key in (
        "head_dim",
        "qk_rope_head_dim",
        "hidden_size",
        "num_attention_heads",
        "max_position_embeddings",
    ):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise bad(key, "a positive integer")
    for key in ("rope_theta", "partial_rotary_factor", "rotary_pct"):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise bad(key, "a number")
    for key in ("rope_parameters", "rope_scaling"):
        value = cfg.get(key)
        if value is not None and not isinstance(value, dict):
            raise bad(key, "a JSON object of RoPE parameters")


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


def method_names(args: argparse.Namespace) -> list[str]:
    names = [m.strip() for m in (args.method or "").split(",") if m.strip()]
    for name in names:
        get_method("default" if name == "none" else name)
    return ["default" if n == "none" else n for n in names]


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
    names = method_names(args)
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


def _method_ropes(names: list[str], base: dict[str, Any]) -> list[Rope]:
    ropes = []
    for name in names:
        params = dict(base)
        if len(names) > 1:
            accepted = get_method(name).params | _MODEL_PARAMS | {"log_n"}
            params = {k: v for k, v in params.items() if k in accepted}
        ropes.append(Rope(name, **params))
    return ropes


def _per_layer_ropes(
    hf: dict[str, Any], names: list[str], given: dict[str, Any]
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
