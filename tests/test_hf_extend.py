"""ropelab.hf.extend on tiny random transformers models of each architecture (no download)."""

from __future__ import annotations

import logging

import pytest
import torch

pytest.importorskip("transformers")
from transformers import AutoConfig, AutoModelForCausalLM

from ropelab import RopeConfigError
from ropelab.hf import extend, restore

logging.getLogger("transformers").setLevel(logging.ERROR)
VOCAB, TRAINED = 97, 32

ARCHS = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {},
    "qwen3": {"head_dim": 16},
    "gemma": {"head_dim": 16},
    "gpt_neox": {"partial_rotary_factor": 0.25, "rotary_pct": 0.25},
    "phi3": {"pad_token_id": 0, "original_max_position_embeddings": TRAINED},
}


def tiny(arch: str, **overrides) -> torch.nn.Module:
    kwargs = dict(
        hidden_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        intermediate_size=96,
        vocab_size=VOCAB,
        max_position_embeddings=TRAINED,
    )
    if arch != "gpt_neox":
        kwargs["num_key_value_heads"] = 2
    kwargs.update(ARCHS[arch])
    kwargs.update(overrides)
    config = AutoConfig.for_model(arch, **kwargs)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


def twin_with_config(model: torch.nn.Module, arch: str) -> torch.nn.Module:
    """The same weights loaded with the extended model's rope_parameters, the transformers way."""
    other = tiny(
        arch,
        rope_parameters=dict(model.config.rope_parameters),
        max_position_embeddings=model.config.max_position_embeddings,
    )
    other.load_state_dict(model.state_dict())
    return other


IDS = torch.randint(0, VOCAB, (2, 3 * TRAINED), generator=torch.Generator().manual_seed(1))
NATIVE = [
    ("linear", {"factor": 4.0}),
    ("yarn", {"factor": 4.0}),
    ("llama3", {"factor": 4.0}),
    ("ntk", {"factor": 4.0}),
    ("ntk-by-parts", {"factor": 4.0}),
]
EVERY = [
    *NATIVE,
    ("dynamic", {"factor": 4.0}),
    ("dynamic-yarn", {}),
    ("ntk-mixed", {"factor": 4.0}),
    ("yarn", {"factor": 4.0, "log_n": True}),
    ("linear", {"factor": 2.0, "log_n": True}),
    ("rerope", {"window": 8}),
    ("leaky-rerope", {"window": 8, "leak": 4.0}),
    ("self-extend", {"group": 4, "window": 8}),
]


@pytest.mark.parametrize("arch", list(ARCHS))
@torch.no_grad()
def test_transformers_methods_equal_loading_with_that_config(arch: str) -> None:
    model = tiny(arch)
    cases = [*NATIVE, ("dynamic", {"factor": 4.0})]
    if arch == "phi3":  # transformers' Phi-3 config accepts only longrope scaling
        pairs = model.config.hidden_size // model.config.num_attention_heads // 2
        cases = [
            (
                "longrope",
                {
                    "factor": 4.0,
                    "short_factor": [1.0 + i / 10 for i in range(pairs)],
                    "long_factor": [2.0 + i for i in range(pairs)],
                },
            )
        ]
    for method, params in cases:
        if method == "llama3" and arch == "gpt_neox":
            continue  # rotary dim 4: llama3's bands need more pairs to mean anything; still valid below
        extend(model, method, **params)
        ours = model(IDS).logits
        theirs = twin_with_config(model, arch)(IDS).logits
        assert (ours - theirs).abs().max() < 1e-5, (arch, method)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "phi3"])
@pytest.mark.parametrize("method,params", EVERY, ids=lambda v: str(v))
@torch.no_grad()
def test_cached_greedy_generation_equals_full_recomputation(arch: str, method: str, params: dict) -> None:
    model = extend(tiny(arch), method, **params)
    prompt = IDS[:1, : TRAINED + 5]
    cached = model.generate(prompt, max_new_tokens=TRAINED, do_sample=False, min_new_tokens=TRAINED)
    seq = prompt
    for _ in range(TRAINED):
        nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat((seq, nxt), dim=1)
    assert torch.equal(cached, seq)


def _cached_vs_recomputed(model: torch.nn.Module, seq: torch.Tensor, prompt_len: int) -> float:
    """Max |logit difference| between cached decoding of ``seq`` and recomputing each prefix in full."""
    out = model(seq[:, :prompt_len], use_cache=True)
    cache, worst = out.past_key_values, 0.0
    for t in range(prompt_len, seq.shape[1]):
        out = model(seq[:, t : t + 1], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        full = model(seq[:, : t + 1], use_cache=False).logits[:, -1]
        worst = max(worst, float((out.logits[:, -1] - full).abs().max()))
    return worst


@torch.no_grad()
def test_transformers_own_dynamic_ntk_is_not_cache_consistent_but_ours_is() -> None:
    """The trap ropelab avoids: transformers' dynamic NTK rotates cached keys with stale frequencies.

    ropelab caches keys unrotated and rotates all of them with the current length's frequencies, so a
    one-layer model's cached logits equal recomputation exactly. With more layers, the cached hidden
    states of earlier tokens were computed at a shorter length (no cache can avoid that), which leaves
    a residual an order of magnitude below transformers' stale-key error.
    """
    seq = IDS[:1, : 2 * TRAINED]
    theirs = tiny("llama", rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0})
    stale = _cached_vs_recomputed(theirs, seq, TRAINED - 4)
    assert stale > 1e-3
    one_layer = extend(tiny("llama", num_hidden_layers=1), "dynamic", factor=4.0)
    assert _cached_vs_recomputed(one_layer, seq, TRAINED - 4) < 1e-6
    ours = extend(tiny("llama"), "dynamic", factor=4.0)
    assert _cached_vs_recomputed(ours, seq, TRAINED - 4) < stale / 5


@torch.no_grad()
def test_extending_one_model_leaves_another_unchanged() -> None:
    a, b = tiny("llama"), tiny("llama")
    before = b(IDS).logits
    extend(a, "dynamic", factor=4.0)
    extend(a, "ntk-mixed", factor=4.0)
    assert torch.equal(b(IDS).logits, before)
    assert b.config._attn_implementation == "sdpa"
    assert not torch.equal(a(IDS).logits, before)
    restore(a)
    assert torch.equal(a(IDS).logits, before)
    extend(a, "yarn", factor=2.0)
    extend(a, "none")
    assert torch.equal(a(IDS).logits, before)


@pytest.mark.parametrize(
    "method,params",
    [("none", {}), ("yarn", {"factor": 4.0}), ("dynamic", {"factor": 4.0}), ("ntk-mixed", {"factor": 2.0})],
)
@torch.no_grad()
def test_left_padded_batch_matches_unpadded(method: str, params: dict) -> None:
    model = extend(tiny("llama"), method, **params)
    short = IDS[0, :40]
    long = IDS[1, :50]
    batch = torch.zeros(2, 50, dtype=torch.long)
    mask = torch.zeros(2, 50, dtype=torch.long)
    batch[0, 10:], mask[0, 10:] = short, 1
    batch[1], mask[1] = long, 1
    out = model.generate(batch, attention_mask=mask, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    alone = model.generate(short[None], max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert torch.equal(out[0, 10:], alone[0])


def test_bad_methods() -> None:
    model = tiny("llama")
    with pytest.raises(RopeConfigError, match="did you mean 'yarn'"):
        extend(model, "yarm", factor=2.0)
    with pytest.raises(RopeConfigError, match="factor must be >= 1"):
        extend(model, "linear", factor=0.5)
    with pytest.raises(RopeConfigError, match="does not take 'window'"):
        extend(model, "linear", factor=2.0, window=4)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
@torch.no_grad()
def test_attention_methods_reduce_to_rope_at_their_limits(arch: str) -> None:
    base = tiny(arch)(IDS).logits
    for method, params in [
        ("self-extend", {"group": 1, "window": 8}),
        ("rerope", {"window": 10_000}),
        ("leaky-rerope", {"window": 10_000, "leak": 2.0}),
    ]:
        ours = extend(tiny(arch), method, **params)(IDS).logits
        assert (ours - base).abs().max() < 1e-5, method
    far = extend(tiny(arch), "rerope", window=4)(IDS).logits
    assert (far - base).abs().max() > 1e-3


def test_attention_methods_refuse_padded_batches() -> None:
    model = extend(tiny("llama"), "self-extend", group=2, window=8)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[0, :5] = 0
    with pytest.raises(RopeConfigError, match="padded batches"):
        model(IDS[:, :20], attention_mask=mask)


# ------------------------------------------------------- a RoPE per layer type: Gemma 3 (issue 10)
GEMMA3_ROPE = {
    "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
}


def tiny_gemma3(
    rope_parameters: dict | None = None, max_position_embeddings: int = TRAINED
) -> torch.nn.Module:
    """A random Gemma 3 text model: a sliding layer (window 8, base 1e4), a global one (base 1e6)."""
    import copy

    config = AutoConfig.for_model(
        "gemma3_text",
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=96,
        num_hidden_layers=2,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=8,
        vocab_size=VOCAB,
        max_position_embeddings=max_position_embeddings,
        rope_parameters=copy.deepcopy(rope_parameters or GEMMA3_ROPE),
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


@pytest.mark.parametrize("method,params", [("linear", {"factor": 4.0}), ("yarn", {"factor": 4.0})])
@torch.no_grad()
def test_gemma3_extend_replaces_only_the_global_layers_rope(method: str, params: dict) -> None:
    from ropelab import Rope

    model = tiny_gemma3()
    before = model(IDS).logits
    rotary = model.model.rotary_emb
    local_before = rotary.sliding_attention_inv_freq.clone()
    extend(model, method, **params)
    rotary = model.model.rotary_emb
    assert model.config.rope_parameters["sliding_attention"] == GEMMA3_ROPE["sliding_attention"]
    assert model.config.rope_parameters["full_attention"]["rope_type"] == method
    assert torch.equal(rotary.sliding_attention_inv_freq, local_before)
    ours = Rope(method, head_dim=16, base=1e6, original_max_position_embeddings=TRAINED, **params)
    assert torch.equal(rotary.full_attention_inv_freq, ours.frequencies()[0])
    assert rotary.full_attention_attention_scaling == ours.frequencies()[1]
    logits = model(IDS).logits
    twin = tiny_gemma3(model.config.rope_parameters, model.config.max_position_embeddings)
    twin.load_state_dict(model.state_dict())
    assert (logits - twin(IDS).logits).abs().max() < 1e-5
    assert (logits - before).abs().max() > 1e-3  # the global layer really changed
    restore(model)
    assert torch.equal(model(IDS).logits, before)


@torch.no_grad()
def test_gemma3_extend_layer_types_option_and_refusals() -> None:
    model = tiny_gemma3()
    extend(model, "linear", factor=2.0, layer_types="sliding_attention")
    assert model.config.rope_parameters["sliding_attention"]["rope_type"] == "linear"
    assert model.config.rope_parameters["full_attention"] == GEMMA3_ROPE["full_attention"]
    assert model.config.ropelab["layer_types"] == ["sliding_attention"]
    with pytest.raises(RopeConfigError, match="did you mean 'full_attention'"):
        extend(model, "linear", factor=2.0, layer_types=["ful_attention"])
    with pytest.raises(RopeConfigError, match="different RoPE geometry"):
        extend(model, "linear", factor=2.0, layer_types=["full_attention", "sliding_attention"])
    with pytest.raises(RopeConfigError, match="RoPE per layer type"):
        extend(model, "dynamic", factor=2.0)
    with pytest.raises(RopeConfigError, match="only for models with a RoPE per layer type"):
        extend(tiny("llama"), "linear", factor=2.0, layer_types=["full_attention"])


@pytest.mark.parametrize("method", ["dynamic", "yarn"])
def test_attention_route_takes_the_causal_kernel_with_the_same_numbers(method: str) -> None:
    """Without a mask from transformers (a plain causal prefill) ropelab's attention function calls SDPA
    with ``is_causal`` instead of building an ``[s_q, s_k]`` mask: the same output (bit for bit on the
    CPU kernels); a decode step needs no mask; positions that are not strictly increasing keep the mask."""
    from types import SimpleNamespace

    from ropelab.hf.attention import _plain_causal, make_attention
    from ropelab.hf.extend import make_extension

    ext = make_extension(tiny("llama").config, method, factor=4.0, log_n=method == "yarn")
    g = torch.Generator().manual_seed(0)
    n = 3 * TRAINED
    q, k, v = (torch.randn(2, h, n, 16, generator=g) for h in (4, 2, 2))
    pos = torch.arange(n).expand(2, n)
    layer = SimpleNamespace(layer_idx=0)
    explicit = (pos[:, None, :] <= pos[:, :, None])[:, None]
    fast, _ = make_attention(ext)(layer, q, k, v, None, position_ids=pos)
    slow, _ = make_attention(ext)(layer, q, k, v, explicit, position_ids=pos)
    assert torch.equal(fast, slow)
    assert _plain_causal(pos, pos) and not _plain_causal(pos[:, :1], pos[:, :1])
    skipped = torch.cat((torch.arange(n // 2), torch.arange(n // 2) + 5 * TRAINED)).expand(2, n)  # PoSE-like
    assert _plain_causal(skipped, skipped)
    assert not _plain_causal(torch.zeros(2, n, dtype=torch.long), torch.zeros(2, n, dtype=torch.long))
    attend = make_attention(ext)  # prefill n - 1 tokens, then one decode step: no mask, the same output
    attend(layer, q[:, :, :-1], k[:, :, :-1], v[:, :, :-1], None, position_ids=pos[:, :-1])
    step, _ = attend(layer, q[:, :, -1:], k, v, None, position_ids=pos[:, -1:])
    assert torch.allclose(step, fast[:, -1:], atol=1e-6)
