"""The one method vocabulary: every name ropelab accepts, in Python, every command, the lab and ``finetune``.

Three kinds of entries, one table (:data:`REGISTRY`, in the order ``ropelab methods`` prints):

- **frequency** methods change RoPE's cos/sin table (:data:`ropelab.rope.METHODS` holds their pure
  functions): ``none`` (plain RoPE), ``linear`` (PI), ``ntk``, ``ntk-mixed``, ``dynamic``, ``ntk-by-parts``,
  ``yarn``, ``dynamic-yarn``, ``llama3``, ``longrope``, ``proportional``;
- **attention**-level methods change the scores themselves (relative positions capped or grouped), on
  top of a frequency method: ``rerope``, ``leaky-rerope``, ``self-extend``;
- **encodings** are what the lab trains a model with: ``nope``, ``sinusoidal``, ``learned``, ``rope``,
  ``xpos``, ``alibi`` (:data:`ropelab.encodings.ENCODINGS`).

log-n (Su 2023, kexue.fm 9706: queries at position n scaled by ``max(1, log n / log L0)``) is one option
that any RoPE method takes: ``+log-n`` in a method's text, ``log_n=True`` in Python, ``--log-n`` on a
command (all three set :attr:`MethodSpec.log_n`).

Aliases (:data:`ALIASES`: ``pi`` for ``linear``, ``default`` for ``none``, ``dynamic-ntk`` for ``dynamic``,
...) are accepted everywhere and resolved once, by :func:`parse_method`, to the canonical name that
results carry.

The grammar of a method's text (:func:`parse_method`; several comma-separated: :func:`parse_methods`)::

    NAME[*A][(KEY=VALUE,...)][+log-n]        e.g.  pi   yarn(factor=4)   ntk*4+log-n   self-extend(group=8)

``(KEY=VALUE,...)`` sets parameters (it is also how :attr:`MethodSpec.label` writes them, so a label read
from a results file parses back to the same method); ``*A`` is the lab's factor policy ``s = A * L / T``
for a method applied beyond the extension ratio (:mod:`ropelab.lab.methods`), refused elsewhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ropelab.errors import RopeConfigError, did_you_mean

Kind = Literal["frequency", "attention", "encoding"]

__all__ = [
    "ALIASES",
    "REGISTRY",
    "Entry",
    "MethodSpec",
    "canonical",
    "entry",
    "parse_method",
    "parse_methods",
    "spec_of_rope",
]


@dataclass(frozen=True)
class Entry:
    """One name of the vocabulary: what it is, what it takes, where it comes from.

    ``params``: the parameters a user may set (``factor``, ``window``, ...); the model's geometry
    (``head_dim``, ``base``, trained length) is read from the model and is not listed.
    """

    name: str
    kind: Kind
    doc: str
    paper: str
    params: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    #: the scale follows the sequence length (dynamic NTK, dynamic YaRN, LongRoPE's short/long switch)
    dynamic: bool = False
    #: the name in ropelab.rope.METHODS (frequency methods) or ropelab.encodings.ENCODINGS (encodings)
    impl: str | None = None

    @property
    def takes_factor(self) -> bool:
        """Whether a ``--factor`` applies (the attention methods keep the model's frequencies)."""
        return "factor" in self.params


def _frequency_entries() -> list[Entry]:
    from ropelab.rope import METHODS

    aliases = {"default": ("default",), "linear": ("pi",), "ntk": ("ntk-aware",), "dynamic": ("dynamic-ntk",)}
    out = []
    for m in METHODS.values():
        name = "none" if m.name == "default" else m.name
        params = () if m.name == "default" else tuple(sorted(m.params))
        out.append(
            Entry(name, "frequency", m.doc, m.paper, params, aliases.get(m.name, ()), m.dynamic, impl=m.name)
        )
    return out


def _attention_entries() -> list[Entry]:
    from ropelab.attention import ATTENTION_METHODS

    return [Entry(name, "attention", m.doc, m.paper, m.params) for name, m in ATTENTION_METHODS.items()]


def _encoding_entries() -> list[Entry]:
    import inspect

    from ropelab.encodings import ENCODINGS

    out = []
    for name, info in ENCODINGS.items():
        sig = inspect.signature(info.cls.__init__).parameters
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        params = tuple(k for k, p in sig.items() if k != "self" and p.kind in named)
        out.append(Entry(name, "encoding", info.doc, info.paper, params, impl=name))
    return out


#: canonical name -> :class:`Entry`, frequency methods first, then attention methods, then encodings
REGISTRY: dict[str, Entry] = {
    e.name: e for e in (*_frequency_entries(), *_attention_entries(), *_encoding_entries())
}
#: alias -> canonical name
ALIASES: dict[str, str] = {alias: e.name for e in REGISTRY.values() for alias in e.aliases}
#: the option every RoPE method takes (not a method): "+log-n" in text, log_n=True in Python
LOG_N = "log-n"


def canonical(name: str) -> str:
    """The canonical name of ``name`` (itself, or what the alias stands for); unknown -> "did you mean"."""
    key = name.strip().lower()
    if key in REGISTRY:
        return key
    if key in ALIASES:
        return ALIASES[key]
    if key in (LOG_N, "log_n", "logn"):
        raise RopeConfigError(f"{name!r} is an option, not a method: add +log-n to a method, e.g. none+log-n")
    choices = [*REGISTRY, *ALIASES]
    raise RopeConfigError(
        f"unknown method {name!r}{did_you_mean(key, choices)}; see `ropelab methods` "
        f"(methods: {', '.join(n for n, e in REGISTRY.items() if e.kind != 'encoding')})"
    )


def entry(name: str) -> Entry:
    """The :class:`Entry` of ``name`` or one of its aliases."""
    return REGISTRY[canonical(name)]


@dataclass(frozen=True)
class MethodSpec:
    """A method as a user asked for it: canonical name, the parameters set, log-n, the lab's ``*A``.

    ``params`` holds only what was given (``factor``, ``window``, ...); defaults that depend on the model
    (Self-Extend's window from the trained length) are resolved where the model is known
    (:func:`ropelab.hf.make_extension`) and recorded beside the spec in results.
    """

    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    log_n: bool = False
    #: the lab's policy multiplier: s = multiplier * L / T (1 everywhere else)
    multiplier: float = 1.0

    def __post_init__(self) -> None:
        name = canonical(self.method)
        object.__setattr__(self, "method", name)
        info = REGISTRY[name]
        params = dict(self.params)
        if "log_n" in params:  # log_n given as a parameter is the same option
            object.__setattr__(self, "log_n", bool(params.pop("log_n")) or self.log_n)
        for key in params:
            if key not in info.params:
                raise RopeConfigError(
                    f"method {name!r} takes no parameter {key!r}{did_you_mean(key, info.params)}; "
                    f"it takes: {', '.join(info.params) or 'nothing'}"
                )
        if info.kind != "encoding":
            params = {k: _normalise(k, v) for k, v in params.items()}
        object.__setattr__(self, "params", dict(sorted(params.items())))
        if self.log_n and info.kind == "encoding":
            raise RopeConfigError(f"+log-n is for RoPE methods, not the encoding {name!r}")
        if not (self.multiplier >= 1.0 and math.isfinite(self.multiplier)):
            raise RopeConfigError(f"{name}*A needs a number A >= 1, got {self.multiplier}")
        if self.multiplier != 1.0 and not (info.takes_factor and not info.dynamic):
            raise RopeConfigError(f"'*A' multiplies a static factor; {name!r} has none")

    @property
    def kind(self) -> Kind:
        return REGISTRY[self.method].kind

    @property
    def label(self) -> str:
        """``name[*A][(k=v,...)][+log-n]``: the text :func:`parse_method` reads back to this spec."""
        text = self.method + (f"*{self.multiplier:g}" if self.multiplier != 1.0 else "")
        if self.params:
            text += "(" + ",".join(f"{k}={_format(v)}" for k, v in self.params.items()) + ")"
        return text + ("+log-n" if self.log_n else "")

    def replace(self, **params: Any) -> MethodSpec:
        """The same method with ``params`` set (``None`` removes a parameter)."""
        merged = {**self.params, **params}
        return MethodSpec(
            self.method, {k: v for k, v in merged.items() if v is not None}, self.log_n, self.multiplier
        )

    def to_dict(self) -> dict[str, Any]:
        """What results rows carry: ``{"method", "params", "log_n"}`` (and ``multiplier`` if not 1)."""
        out: dict[str, Any] = {"method": self.method, "params": dict(self.params), "log_n": self.log_n}
        if self.multiplier != 1.0:
            out["multiplier"] = self.multiplier
        return out

    def __hash__(self) -> int:
        return hash(self.label)


#: parameters that are whole numbers; every other numeric method parameter is a float
_INT_PARAMS = frozenset({"window", "group", "max_position_embeddings", "unscaled_positions"})


def _normalise(key: str, value: Any) -> Any:
    """One type per parameter (``factor=4`` and ``factor=4.0`` are one method, one resume key)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, (list, tuple)):
            return [float(v) for v in value]
        return value
    if key in _INT_PARAMS:
        if value != int(value):
            raise RopeConfigError(f"{key} must be a whole number, got {value}")
        return int(value)
    return float(value)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(v) for v in value) + "]"
    return str(value)


def _value(text: str, where: str) -> Any:
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if text.startswith("[") and text.endswith("]"):
        return [_value(t, where) for t in _split(text[1:-1])]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise RopeConfigError(f"{where}: expected a number or true/false, got {text!r}") from None
    if not math.isfinite(value):
        raise RopeConfigError(f"{where}: expected a finite number, got {text!r}")
    return value


def _split(text: str) -> list[str]:
    """Split on commas outside brackets: ``"a,b(x=1,y=2),c"`` -> ``["a", "b(x=1,y=2)", "c"]``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise RopeConfigError(f"unbalanced ')' in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise RopeConfigError(f"unbalanced '(' in {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


_GRAMMAR = re.compile(r"^(?P<name>[A-Za-z][\w.-]*?)(?:\*(?P<mult>[^()+]+))?(?:\((?P<params>.*)\))?$")


def parse_method(text: str, *, log_n: bool = False, **params: Any) -> MethodSpec:
    """``NAME[*A][(KEY=VALUE,...)][+log-n]`` -> :class:`MethodSpec` with the canonical name.

    ``params`` (keyword arguments) are set after those in the text; ``log_n=True`` adds log-n (as
    ``--log-n`` does for every method of a command). Unknown names and parameters raise
    :class:`ropelab.RopeConfigError` with a "did you mean".

    >>> parse_method("pi(factor=4)").label
    'linear(factor=4)'
    >>> parse_method("ntk*4+log-n").label
    'ntk*4+log-n'
    """
    raw = text.strip()
    if not raw:
        raise RopeConfigError("empty method name")
    body = raw
    for suffix in ("+log-n", "+log_n", "+logn"):
        if body.lower().endswith(suffix):
            body, log_n = body[: -len(suffix)], True
            break
    if "+" in body:
        extra = body.partition("+")[2]
        raise RopeConfigError(f"unknown method suffix {extra!r} in {raw!r}; the only suffix is +log-n")
    found = _GRAMMAR.match(body.strip())
    if found is None:
        raise RopeConfigError(f"cannot read method {raw!r}: expected NAME[*A][(key=value,...)][+log-n]")
    given: dict[str, Any] = {}
    for item in _split(found.group("params") or ""):
        key, eq, value = item.partition("=")
        if not eq:
            raise RopeConfigError(f"{raw!r}: expected key=value inside the brackets, got {item!r}")
        given[key.strip().replace("-", "_")] = _value(value, f"{raw!r} {key.strip()}")
    multiplier = 1.0
    if found.group("mult") is not None:
        value = _value(found.group("mult"), f"{raw!r} *A")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RopeConfigError(f"{raw!r}: '*A' takes a number A >= 1")
        multiplier = float(value)
    given.update(params)
    return MethodSpec(found.group("name"), given, log_n, multiplier)


def parse_methods(text: str | Iterable[str], *, log_n: bool = False, **params: Any) -> list[MethodSpec]:
    """Several methods, comma-separated (commas inside brackets belong to a method); repeats dropped."""
    items = _split(text) if isinstance(text, str) else [t for part in text for t in _split(part)]
    if not items:
        raise RopeConfigError("no method given")
    specs = [parse_method(item, log_n=log_n, **params) for item in items]
    return list({spec.label: spec for spec in specs}.values())


def spec_of_rope(rope: Any) -> MethodSpec:
    """The :class:`MethodSpec` of a configured :class:`ropelab.Rope` (its method's canonical name, the
    method parameters it sets, log-n): what ``inspect`` and ``export`` rows carry."""
    values = rope.to_dict()
    impl = values.pop("method")
    name = next(n for n, e in REGISTRY.items() if e.kind == "frequency" and e.impl == impl)
    params = {k: v for k, v in values.items() if k in REGISTRY[name].params}
    return MethodSpec(name, params, bool(values.get("log_n", False)))
