"""What ``eval`` and ``passkey`` settle once, before any work: the methods, the model, dtype and device.

- :func:`expand_methods`: methods in the grammar of :mod:`ropelab.registry` (aliases such as ``pi``,
  ``+log-n``), crossed with ``factors`` for the methods that take one (the frequency methods other than
  ``none``; the attention methods keep the model's frequencies), the attention methods' ``window`` /
  ``leak`` / ``group`` set where given.
- :func:`load` / :func:`wrap`: a model with what results rows say about it (:class:`LoadedModel`: the name
  as given, :func:`ropelab.hf.load.model_fingerprint`, the trained length read once from its config, the
  dtype and device it computes in).
- :func:`resolve_device` / :func:`resolve_dtype`: ``auto`` is a GPU where there is one, else the CPU;
  float32 on a CPU, bfloat16 on a GPU.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ropelab.errors import RopeConfigError
from ropelab.hf import Extension, make_extension, model_geometry
from ropelab.registry import REGISTRY, MethodSpec, parse_methods
from ropelab.report.provenance import run_context
from ropelab.train.distributed import Dist, join

#: the attention methods' options a command sets for every method that takes them
ATTENTION_OPTIONS = ("window", "leak", "group")


def expand_methods(
    methods: str | MethodSpec | Iterable[str | MethodSpec],
    factors: Sequence[float] = (),
    *,
    log_n: bool = False,
    **options: Any,
) -> list[MethodSpec]:
    """The :class:`ropelab.MethodSpec` of every run: ``methods`` x ``factors`` (repeats dropped).

    A method that takes a factor and has none in its text runs once per factor (``ntk`` with factors
    (2, 4): ``ntk(factor=2)``, ``ntk(factor=4)``); one with a factor in its text keeps it. ``options``
    (``window``, ``leak``, ``group``; ``None`` = the method's default) go to the methods that take them.
    ``log_n`` adds log-n to every method.

    >>> [s.label for s in expand_methods("none,pi", [2, 4])]
    ['none', 'linear(factor=2)', 'linear(factor=4)']
    """
    for key in options:
        if key not in ATTENTION_OPTIONS:
            raise RopeConfigError(f"unknown option {key!r}; the options are {', '.join(ATTENTION_OPTIONS)}")
    items = [methods] if isinstance(methods, (str, MethodSpec)) else list(methods)
    specs: list[MethodSpec] = []
    for item in items:
        parsed = [item] if isinstance(item, MethodSpec) else parse_methods(item)
        for spec in parsed:
            if spec.kind == "encoding":
                raise RopeConfigError(
                    f"{spec.method!r} is an encoding the lab trains models with, not a method for a loaded "
                    f"model (see `ropelab methods`)"
                )
            if spec.multiplier != 1.0:
                raise RopeConfigError(
                    f"{spec.label!r}: '*A' is the lab's factor policy; give a model's method --factor instead"
                )
            if log_n and not spec.log_n:
                spec = MethodSpec(spec.method, spec.params, True, spec.multiplier)
            entry = REGISTRY[spec.method]
            given = {k: v for k, v in options.items() if v is not None and k in entry.params}
            spec = spec.replace(**{k: v for k, v in given.items() if k not in spec.params})
            if entry.takes_factor and "factor" not in spec.params and factors:
                specs.extend(spec.replace(factor=float(f)) for f in factors)
            else:
                specs.append(spec)
    if not specs:
        raise RopeConfigError("no method given")
    return list({spec.label: spec for spec in specs}.values())


def resolve_device(name: str | None = "auto") -> str:
    """``auto`` -> ``cuda`` where there is a CUDA device, else ``mps`` where there is one, else ``cpu``;
    a named device that this machine lacks is refused in one line."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RopeConfigError(f"--device {name}: no CUDA device on this machine; use --device cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RopeConfigError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA devices"
            )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RopeConfigError("--device mps: no MPS device on this machine; use --device cpu")
    return name


def resolve_dtype(name: str | torch.dtype | None, device: str) -> torch.dtype:
    """``auto`` (or None) -> float32 on a CPU, bfloat16 on a GPU; a name -> its torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    name = (name or "auto").removeprefix("torch.")
    if name == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise RopeConfigError(f"unknown dtype {name!r}; choose auto, float32, bfloat16 or float16")
    return dtype


@dataclass(frozen=True)
class LoadedModel:
    """A model and tokenizer with what every results row says about them."""

    model: Any
    tokenizer: Any
    #: the model as named (``smollm2``, a folder, a GGUF file, a hub id)
    name: str
    #: :func:`ropelab.hf.load.model_fingerprint` of its files (or a hash of the name, for a model
    #: passed in whose files are unknown)
    model_id: str
    #: the length its RoPE was trained to (read once, from its config)
    trained_length: int

    @property
    def dtype(self) -> str:
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    def run_context(self, command: str, corpus: Mapping[str, str], threads: int | None) -> dict[str, Any]:
        """The :func:`ropelab.report.provenance.run_context` of a run of ``command`` on this model."""
        return run_context(
            command=command,
            model=self.name,
            model_id=self.model_id,
            trained_length=self.trained_length,
            dtype=self.dtype,
            device=self.device,
            corpus=corpus,
            threads=threads,
        )

    def extensions(self, specs: Sequence[MethodSpec]) -> dict[str, Extension]:
        """label -> :class:`ropelab.hf.Extension` of every spec, resolved once against the model's config
        (its :meth:`~ropelab.hf.Extension.resolved` is what rows record): a method the model cannot take
        fails here, before the long work starts."""
        return {spec.label: make_extension(self.model.config, spec) for spec in specs}


def _identity(name: str) -> str:
    """The fingerprint of a model named by a path or ``smollm2``; a hash of the name otherwise
    (no network: a model passed in by the caller may come from anywhere)."""
    from ropelab.hf.load import DEFAULT_MODEL, model_fingerprint

    if name == DEFAULT_MODEL or (name and Path(name).expanduser().exists()):
        return model_fingerprint(name)
    return hashlib.sha256(f"unresolved:{name}".encode()).hexdigest()[:16]


def load(name: str, *, dtype: str | torch.dtype | None = "auto", device: str | None = "auto") -> LoadedModel:
    """Load ``name`` (:func:`ropelab.hf.load.load_model`) in ``dtype`` on ``device`` (``auto``: see
    :func:`resolve_device`, :func:`resolve_dtype`)."""
    from ropelab.hf.load import load_model, model_fingerprint

    where = resolve_device(device)
    model, tokenizer = load_model(name, dtype=resolve_dtype(dtype, where), device=where)
    trained = model_geometry(model.config)["trained_length"]
    return LoadedModel(model, tokenizer, name, model_fingerprint(name), trained)


def wrap(
    model: Any,
    tokenizer: Any,
    *,
    name: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
) -> LoadedModel:
    """A model the caller loaded, as a :class:`LoadedModel`: ``name`` defaults to where transformers
    loaded it from (``config.name_or_path``); a ``dtype`` or ``device`` given moves the model there."""
    if tokenizer is None:
        raise RopeConfigError("a model passed in needs its tokenizer (or pass the model's name instead)")
    if device is not None or (dtype is not None and dtype != "auto"):
        where = resolve_device(device) if device is not None else str(next(model.parameters()).device)
        model.to(device=where, dtype=resolve_dtype(dtype, where) if dtype is not None else None)
    name = name or getattr(model.config, "name_or_path", "") or type(model).__name__
    trained = model_geometry(model.config)["trained_length"]
    return LoadedModel(model.eval(), tokenizer, name, _identity(name), trained)


def model_or_name(
    model: Any,
    tokenizer: Any,
    *,
    name: str | None,
    dtype: str | torch.dtype | None,
    device: str | None,
    threads: int | None,
) -> LoadedModel:
    """:func:`load` for a name, :func:`wrap` for a model; ``threads`` sets torch's CPU threads first."""
    if threads is not None:
        if threads < 1:
            raise RopeConfigError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    if isinstance(model, str):
        return load(model, dtype=dtype, device=device)
    if isinstance(model, LoadedModel):
        return model
    return wrap(model, tokenizer, name=name, dtype=dtype, device=device)


def open_model(
    model: Any,
    tokenizer: Any,
    *,
    name: str | None,
    dtype: str | torch.dtype | None,
    device: str | None,
    threads: int | None,
    log: Callable[[str], None] | None,
) -> tuple[Dist, LoadedModel, Callable[[str], None]]:
    """This process's place in the job (:func:`ropelab.train.distributed.join`: under torchrun each rank on
    its own device) and the model loaded there (:func:`model_or_name`), with the ``log`` to use: the
    caller's on rank 0, silent on the other ranks. Logs the load."""
    say = log or (lambda _line: None)
    d = join(device)
    if d.distributed:
        device, say = d.device, say if d.main else (lambda _line: None)
    t0 = time.perf_counter()
    loaded = model_or_name(model, tokenizer, name=name, dtype=dtype, device=device, threads=threads)
    say(f"loaded {loaded.name} ({loaded.dtype}, {loaded.device}) in {time.perf_counter() - t0:.1f}s")
    return d, loaded, say
