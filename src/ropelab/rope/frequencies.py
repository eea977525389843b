"""One pure function per RoPE method, chosen by name from :data:`METHODS`.

Every function has the signature ``fn(cfg: RopeParams, seq_len: int | None) -> (inv_freq, scaling)``
(``cfg`` is in practice a validated :class:`ropelab.RopeConfig`, a subclass of ``RopeParams``):

- ``inv_freq``: float32 tensor ``[d/2]`` (``[head_dim/2]`` for ``proportional``), the inverse
  frequencies theta_i of the rotary pairs;
- ``scaling``: a float multiplied into cos and sin (so attention logits scale by its square).

``seq_len`` is the current sequence length; only the dynamic methods (``dynamic``,
``dynamic-yarn``) and ``longrope`` (short vs long factors) read it.

Where transformers has the method, the arithmetic follows its order of operations in float32, so the
results are bit-identical to ``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS`` (tests check it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ropelab.rope.params import DEFAULT_MIXED_EXPONENT, RopeParams

MethodFn = Callable[[RopeParams, "int | None"], "tuple[torch.Tensor, float]"]


def base_inv_freq(base: float, dim: int) -> torch.Tensor:
    """theta_i = base^(-2i/dim), i = 0 .. dim/2-1, float32 ``[dim/2]`` (RoFormer, Su et al. 2021)."""
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


# ---------------------------------------------------------------------------- methods
def default(cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Plain RoPE: theta_i = b^(-2i/d). Su et al. 2021, RoFormer, arXiv 2104.09864."""
    return base_inv_freq(cfg.base, cfg.rotary_dim), 1.0


def linear(cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Position Interpolation: theta_i / s, i.e. positions m/s. Chen et al. 2023, arXiv 2306.15595."""
    inv_freq = base_inv_freq(cfg.base, cfg.rotary_dim)
    inv_freq /= cfg.scale
    return inv_freq, 1.0


def ntk(cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Static NTK-aware scaling: base b' = b * s^(d/(d-2)) (bloc97, r/LocalLLaMA, 2023).

    The fastest pair keeps its frequency (extrapolates); the slowest one is divided by exactly s (as PI).
    """
    d = cfg.rotary_dim
    return base_inv_freq(cfg.base * cfg.scale ** (d / (d - 2)), d), 1.0


def ntk_mixed(cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """NTK-mixed: theta_j / exp(a * j^c), j = 1 .. d/2, a = ln(s) / (d/2)^c (Su, kexue.fm 9706).

    The slowest pair is divided by exactly s; faster pairs progressively less. Same convention as
    vLLM's ``ntk`` scaling with ``mixed_b = c``.
    """
    d = cfg.rotary_dim
    c = cfg.mixed_exponent if cfg.mixed_exponent is not None else DEFAULT_MIXED_EXPONENT
    a = math.log(cfg.scale) / (d / 2) ** c
    j = torch.arange(1, d // 2 + 1, dtype=torch.float64)
    lam = torch.exp(a * j**c)
    return (base_inv_freq(cfg.base, d).double() / lam).float(), 1.0


def dynamic(cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Dynamic NTK: for l > L, b' = b * (s*l/L - (s-1))^(d/(d-2)); theta_i for l <= L (emozilla 2023).

    L is the trained length (transformers uses ``max_position_embeddings`` for it).
    """
    d = cfg.rotary_dim
    trained = cfg.trained_length
    assert trained is not None  # validated
    length = trained if seq_len is None else max(int(seq_len), trained)
    s = cfg.scale
    base = cfg.base * ((s * length / trained) - (s - 1)) ** (d / (d - 2))
    return base_inv_freq(base, d), 1.0


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature term 0.1 * mscale * ln(s) + 1 (1 for s <= 1)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def longrope_attention(scale: float, trained: int) -> float:
    """LongRoPE's default attention factor sqrt(1 + ln(s) / ln(L0)) (1 for s <= 1); Ding et al. 2024."""
    return 1.0 if scale <= 1 else math.sqrt(1 + math.log(scale) / math.log(trained))


def _yarn_ramp_inv_freq(cfg: RopeParams, scale: float) -> torch.Tensor:
    """NTK-by-parts frequencies: a linear ramp in the pair index between beta_fast and beta_slow.

    D(r) = d*ln(L0/(2*pi*r)) / (2*ln b) is the pair index that completes r rotations in L0 tokens;
    pairs below D(beta_fast) keep theta_i, pairs above D(beta_slow) get theta_i / s.
    """
    d = cfg.rotary_dim
    base = cfg.base
    trained = cfg.trained_length
    assert trained is not None
    beta_fast = cfg.beta_fast or 32
    beta_slow = cfg.beta_slow or 1

    def correction_dim(rotations: float) -> float:
        return (d * math.log(trained / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if cfg.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = torch.clamp((torch.arange(d // 2, dtype=torch.float32) - low) / (high - low), 0, 1)

    pos_freqs = base ** (torch.arange(0, d, 2).float() / d)
    extrapolation = 1.0 / pos_freqs
    interpolation = 1.0 / (scale * pos_freqs)
    keep = 1 - ramp  # weight of the original (extrapolated) frequency
    return interpolation * (1 - keep) + extrapolation * keep


def _yarn_attention_factor(cfg: RopeParams, scale: float) -> float:
    if cfg.attention_factor is not None:
        return float(cfg.attention_factor)
    if cfg.mscale and cfg.mscale_all_dim:
        return float(yarn_mscale(scale, cfg.mscale) / yarn_mscale(scale, cfg.mscale_all_dim))
    return yarn_mscale(scale)


def ntk_by_parts(cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """NTK-by-parts: YaRN's frequency ramp without its attention temperature.

    Peng et al. 2023, YaRN, arXiv 2309.00071, section 3.2.
    """
    return _yarn_ramp_inv_freq(cfg, cfg.scale), 1.0


def yarn(cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """YaRN: NTK-by-parts frequencies and cos/sin scaled by 0.1*ln(s)+1.

    Peng et al. 2023, arXiv 2309.00071; transformers ``yarn`` (DeepSeek mscale / mscale_all_dim too).
    """
    scale = cfg.scale
    return _yarn_ramp_inv_freq(cfg, scale), _yarn_attention_factor(cfg, scale)


def dynamic_yarn(cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Dynamic YaRN: YaRN with s = max(1, l/L0) recomputed as the sequence grows (YaRN repository)."""
    trained = cfg.trained_length
    assert trained is not None
    scale = 1.0 if seq_len is None else max(1.0, int(seq_len) / trained)
    return _yarn_ramp_inv_freq(cfg, scale), _yarn_attention_factor(cfg, scale)


def llama3(cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Llama 3.1: keep short wavelengths, divide long ones by s, blend between (Meta, 2024).

    Wavelengths below L0/high_freq_factor are untouched; above L0/low_freq_factor divided by s;
    between, (1-a)*theta/s + a*theta with a = (L0/lambda - low)/(high - low).
    """
    inv_freq = base_inv_freq(cfg.base, cfg.rotary_dim)
    factor = cfg.scale
    low = cfg.low_freq_factor if cfg.low_freq_factor is not None else 1.0
    high = cfg.high_freq_factor if cfg.high_freq_factor is not None else 4.0
    old_context = cfg.trained_length
    assert old_context is not None
    low_wavelen = old_context / low
    high_wavelen = old_context / high

    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled), 1.0


def longrope(cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """LongRoPE: theta_i / ext_i, ext = long_factor if l > L0 else short_factor.

    Ding et al. 2024, arXiv 2402.13753; transformers ``longrope`` (Phi-3). Attention factor
    sqrt(1 + ln(s)/ln(L0)) for s > 1 unless given.
    """
    d = cfg.rotary_dim
    trained = cfg.trained_length
    assert trained is not None and cfg.short_factor is not None and cfg.long_factor is not None
    factor = cfg.scale
    if cfg.attention_factor is not None:
        attention = float(cfg.attention_factor)
    else:
        attention = longrope_attention(factor, trained)
    ext = cfg.long_factor if seq_len and seq_len > trained else cfg.short_factor
    ext_factors = torch.tensor(ext, dtype=torch.float32)
    shape = torch.arange(0, d, 2, dtype=torch.int64).float() / d
    return 1.0 / (ext_factors * cfg.base**shape), attention


def proportional(cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Proportional RoPE (transformers ``proportional``): exponents over the whole head_dim.

    The first ``int(partial * head_dim // 2)`` pairs get theta_i = b^(-2i/head_dim) / s, the rest get
    frequency 0 (no rotation); the result always has head_dim/2 entries.
    """
    head_dim = cfg.head_dim
    angles = int(cfg.partial_rotary_factor * head_dim // 2)
    rotated = 1.0 / (cfg.base ** (torch.arange(0, 2 * angles, 2, dtype=torch.int64).float() / head_dim))
    still = head_dim // 2 - angles
    inv_freq = torch.cat((rotated, torch.zeros(still, dtype=torch.float32))) if still > 0 else rotated
    inv_freq /= cfg.scale
    return inv_freq, 1.0


# ---------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Method:
    """A registry entry: the pure function and what a user needs to know about it."""

    name: str
    fn: MethodFn
    doc: str
    paper: str
    params: frozenset[str]
    needs_trained_length: bool = False
    dynamic: bool = False
    hf_name: str | None = None

    def __call__(self, cfg: RopeParams, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
        return self.fn(cfg, seq_len)


def _m(name: str, fn: MethodFn, doc: str, paper: str, params: str = "", **kw: object) -> Method:
    return Method(name, fn, doc, paper, frozenset(params.split()), **kw)  # type: ignore[arg-type]


_YARN = "factor max_position_embeddings attention_factor beta_fast beta_slow mscale mscale_all_dim truncate"

#: name -> :class:`Method`. Insertion order is the order of ``ropelab methods``.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        _m(
            "default",
            default,
            "plain RoPE, no scaling",
            "Su et al. 2021, RoFormer (arXiv 2104.09864)",
            hf_name="default",
        ),
        _m(
            "linear",
            linear,
            "Position Interpolation: positions divided by s",
            "Chen et al. 2023 (arXiv 2306.15595)",
            "factor",
            hf_name="linear",
        ),
        _m("ntk", ntk, "static NTK-aware: base * s^(d/(d-2))", "bloc97 2023 (r/LocalLLaMA)", "factor"),
        _m(
            "ntk-mixed",
            ntk_mixed,
            "NTK-mixed: pair j divided by exp(ln(s)*(2j/d)^c)",
            "Su 2023, kexue.fm/archives/9706",
            "factor mixed_exponent",
        ),
        _m(
            "dynamic",
            dynamic,
            "dynamic NTK: base grows with the sequence past L0",
            "emozilla 2023 (r/LocalLLaMA)",
            "factor",
            needs_trained_length=True,
            dynamic=True,
            hf_name="dynamic",
        ),
        _m(
            "ntk-by-parts",
            ntk_by_parts,
            "ramp between extrapolation and interpolation by wavelength",
            "Peng et al. 2023, YaRN sec. 3.2 (arXiv 2309.00071)",
            "factor max_position_embeddings beta_fast beta_slow truncate",
            needs_trained_length=True,
        ),
        _m(
            "yarn",
            yarn,
            "NTK-by-parts + attention temperature 0.1 ln(s) + 1",
            "Peng et al. 2023, YaRN (arXiv 2309.00071)",
            _YARN,
            needs_trained_length=True,
            hf_name="yarn",
        ),
        _m(
            "dynamic-yarn",
            dynamic_yarn,
            "YaRN with s = max(1, l/L0) as the sequence grows",
            "Peng et al. 2023, YaRN repository",
            "attention_factor beta_fast beta_slow mscale mscale_all_dim truncate",
            needs_trained_length=True,
            dynamic=True,
        ),
        _m(
            "llama3",
            llama3,
            "Llama 3.1: keep short wavelengths, interpolate long ones, blend between",
            "Meta 2024, Llama 3.1",
            "factor low_freq_factor high_freq_factor",
            needs_trained_length=True,
            hf_name="llama3",
        ),
        _m(
            "longrope",
            longrope,
            "searched per-frequency factors, short and long sets",
            "Ding et al. 2024, LongRoPE (arXiv 2402.13753)",
            "factor max_position_embeddings attention_factor short_factor long_factor unscaled_positions",
            needs_trained_length=True,
            dynamic=True,
            hf_name="longrope",
        ),
        _m(
            "proportional",
            proportional,
            "exponents over the whole head_dim; unrotated pairs get frequency 0",
            "transformers 'proportional' (Gemma-style partial RoPE)",
            "factor",
            hf_name="proportional",
        ),
    )
}


def get_method(name: str) -> Method:
    """The registry entry for ``name`` or a :class:`RopeConfigError` with a "did you mean"."""
    from ropelab.errors import RopeConfigError, did_you_mean

    try:
        return METHODS[name]
    except KeyError:
        raise RopeConfigError(
            f"unknown RoPE method {name!r}{did_you_mean(name, METHODS)}; choose one of: {', '.join(METHODS)}"
        ) from None
