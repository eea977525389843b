"""The fused rotary kernels (C++ on CPU, Triton under its interpreter) and the cos/sin table cache.

The kernels must give the torch path's bits (`backend="torch"`, itself bit-identical to transformers for
the half layout) in every dtype, layout and rounding mode, so that the backend never changes a result.
The C++ kernel is built once (cached under ~/.cache/ropelab/kernels or $ROPELAB_KERNELS_DIR); these tests
skip only where no C++ compiler exists.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

import ropelab.rope.core as core
from ropelab import Rope, apply_rotary, apply_rotary_, rotate
from ropelab.kernels import KernelUnavailableError, build, cpu_kernel, cpu_kernel_error, fused
from ropelab.rope.apply import AUTO_MIN_ELEMENTS, _kernel_backend

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
LAYOUTS = ("half", "interleaved")
HAVE_CXX = shutil.which(os.environ.get("CXX", "c++")) is not None


@pytest.fixture(scope="module")
def cpp():
    """The built C++ kernel; a build failure fails the tests when a compiler exists."""
    if not HAVE_CXX:
        pytest.skip("no C++ compiler")
    ops = cpu_kernel()
    assert ops is not None, f"the C++ kernel did not build: {cpu_kernel_error()}"
    return ops


def tables(positions, r: int, dtype=torch.float32, base: float = 10000.0):
    """Half tables cos, sin of shape [*positions.shape, r/2]; angles in float64, scaled by 1.25 (a YaRN-like
    attention scaling, so |cos| > 1 happens too)."""
    positions = torch.as_tensor(positions)
    inv_freq = 1.0 / (base ** (torch.arange(0, r, 2, dtype=torch.float64) / r))
    angles = positions[..., None].double() * inv_freq
    return (1.25 * angles.cos()).to(dtype), (1.25 * angles.sin()).to(dtype)


def randn(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (4 * torch.randn(*shape, generator=g)).to(dtype)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({4: torch.int32, 2: torch.int16}[t.element_size()])


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(bits(a), bits(b))


# --- C++ kernel: bit-identical to the torch path --------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("upcast", [False, True])
def test_cpp_matches_torch_path_bitwise(cpp, dtype, layout, upcast):
    b, s, d = 2, 19, 40
    cases = itertools.product(
        [1, 2],  # heads_dim
        [40, 24],  # rotary dim: full, partial
        ["shared", "per-batch", "batch-1"],  # table kind
        [torch.float32, dtype],  # table dtype
    )
    for heads_dim, r, kind, table_dtype in cases:
        # KV-cache offset: the caller slices a longer table; per-batch rows start at different positions
        pos = (
            torch.arange(500, 500 + s)
            if kind != "per-batch"
            else torch.stack((torch.arange(s), 7 + torch.arange(s)))
        )
        cos, sin = tables(pos, r, table_dtype)
        if kind == "batch-1":
            cos, sin = cos[None], sin[None]
        q, k = randn(b, 6, s, d, dtype=dtype, seed=1), randn(b, 2, s, d, dtype=dtype, seed=2)  # GQA
        if heads_dim == 2:
            q, k = q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous()
        kw = {"layout": layout, "heads_dim": heads_dim, "upcast": upcast}
        ref_q, ref_k = apply_rotary(q, k, cos, sin, backend="torch", **kw)
        out_q, out_k = apply_rotary(q, k, cos, sin, backend="cpp", **kw)
        case = (heads_dim, r, kind, table_dtype)
        assert same(out_q, ref_q) and same(out_k, ref_k), case
        q2, k2 = q.clone(), k.clone()
        apply_rotary_(q2, k2, cos, sin, backend="cpp", **kw)
        assert same(q2, ref_q) and same(k2, ref_k), case


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpp_multithreaded_shape_and_strided_views(cpp, dtype):
    # large enough for the OpenMP path; q and k as views into one fused [b, s, hq + hk, d] projection
    b, s, d, r = 2, 300, 64, 64
    cos, sin = tables(torch.arange(s), r)
    fused = randn(b, s, 8 + 2, d, dtype=dtype, seed=3)
    q, k = fused[:, :, :8], fused[:, :, 8:]
    for layout, upcast in itertools.product(LAYOUTS, [False, True]):
        kw = {"layout": layout, "heads_dim": 2, "upcast": upcast}
        ref_q, ref_k = apply_rotary(q, k, cos, sin, backend="torch", **kw)
        out_q, out_k = apply_rotary(q, k, cos, sin, backend="cpp", **kw)
        assert same(out_q, ref_q) and same(out_k, ref_k)
        # the same views as [b, h, s, d]: non-contiguous in every dim but the last
        qt, kt = apply_rotary(
            q.transpose(1, 2), k.transpose(1, 2), cos, sin, backend="cpp", layout=layout, upcast=upcast
        )
        assert same(qt.transpose(1, 2), ref_q) and same(kt.transpose(1, 2), ref_k)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cpp_inplace_writes_through_views_and_keeps_pass_through_bits(cpp, layout):
    b, s, d, r = 2, 7, 40, 24
    cos, sin = tables(torch.arange(s), r)
    fused = randn(b, s, 6, d, dtype=torch.bfloat16, seed=4)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0], dtype=torch.bfloat16)
    fused[..., r : r + 5] = specials  # channels past r must survive bit for bit
    before = fused.clone()
    ref_q, ref_k = apply_rotary(
        fused[:, :, :4], fused[:, :, 4:], cos, sin, heads_dim=2, layout=layout, backend="torch"
    )
    ptr = fused.data_ptr()
    q, _ = apply_rotary_(
        fused[:, :, :4], fused[:, :, 4:], cos, sin, heads_dim=2, layout=layout, backend="cpp"
    )
    assert q.data_ptr() == ptr and fused.data_ptr() == ptr
    assert same(fused[:, :, :4], ref_q) and same(fused[:, :, 4:], ref_k)
    assert same(fused[..., r:], before[..., r:])
    out = rotate(before, cos, sin, heads_dim=2, layout=layout, backend="cpp")  # out of place: tail copied
    assert same(out[..., r:], before[..., r:])


def test_upcast_rounds_once_from_float32(cpp):
    s, r = 33, 64
    cos, sin = tables(torch.arange(4000, 4000 + s), r)  # float32 tables: upcast uses them unrounded
    x = randn(1, 4, s, r, dtype=torch.bfloat16, seed=5)
    ref = rotate(x.float(), cos, sin, backend="torch").to(torch.bfloat16)
    for backend in ("torch", "cpp"):
        assert same(rotate(x, cos, sin, backend=backend, upcast=True), ref)
    exact64 = rotate(x.double(), cos.double(), sin.double())
    err_up = (rotate(x, cos, sin, upcast=True).double() - exact64).abs().mean()
    err_dtype = (rotate(x, cos, sin).double() - exact64).abs().mean()
    assert err_up < err_dtype  # one rounding of float32 arithmetic beats bf16 arithmetic


# --- autograd through the dispatch ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("heads_dim", [1, 2])
def test_cpp_gradients_equal_torch_path(cpp, dtype, layout, heads_dim):
    b, s, d, r = 2, 9, 24, 16
    cos, sin = tables(torch.arange(3, 3 + s), r)
    x, g, v = (randn(b, 3, s, d, dtype=dtype, seed=seed) for seed in (6, 7, 8))
    if heads_dim == 2:  # [b, s, h, d]; the upstream gradient g as a non-contiguous view
        x, g, v = x.transpose(1, 2).contiguous(), g.transpose(1, 2), v.transpose(1, 2).contiguous()
    kw = {"layout": layout, "heads_dim": heads_dim}
    results = {}
    for backend in ("torch", "cpp"):
        xb, gb = x.clone().requires_grad_(), g.clone().requires_grad_()
        out = rotate(xb, cos, sin, backend=backend, **kw)
        (gx,) = torch.autograd.grad(out, xb, gb, create_graph=True)  # R^T g
        (gg,) = torch.autograd.grad(gx, gb, v)  # double backward: R v
        results[backend] = (out.detach(), gx.detach(), gg)
    for got, want in zip(results["cpp"], results["torch"], strict=True):
        assert same(got, want)  # the backward rotates by -angle with the same rounding: same bits
    assert same(results["cpp"][2], rotate(v, cos, sin, backend="torch", **kw))


def test_cpp_gradcheck_float32_against_torch_jacobian(cpp):
    # float64 is not a kernel dtype: check the float32 kernel's vector-Jacobian product against
    # the float64 torch path's
    cos, sin = tables(torch.arange(5), 8)
    x = randn(1, 2, 5, 10, seed=8).requires_grad_()
    g = randn(1, 2, 5, 10, seed=9)
    (gx,) = torch.autograd.grad(rotate(x, cos, sin, backend="cpp"), x, g)
    x64 = x.detach().double().requires_grad_()
    (gx64,) = torch.autograd.grad(rotate(x64, cos.double(), sin.double(), backend="torch"), x64, g.double())
    torch.testing.assert_close(gx.double(), gx64, rtol=1e-6, atol=1e-6)


def test_table_gradients_and_inplace_under_autograd_take_the_torch_path(cpp):
    cos, sin = tables(torch.arange(6), 8)
    x = randn(1, 2, 6, 8, seed=10).requires_grad_()
    assert _kernel_backend("cpp", x, cos, sin, inplace=False) == "cpp"
    assert _kernel_backend("cpp", x, cos, sin, inplace=True) is None
    assert _kernel_backend("cpp", x.detach(), cos.requires_grad_(), sin, inplace=False) is None
    out = rotate(x, cos, sin, backend="cpp")
    (gc,) = torch.autograd.grad(out.sum(), cos)
    assert gc.shape == cos.shape
    y = apply_rotary_(x.clone(), None, cos.detach(), sin, backend="cpp")[0]
    assert y.requires_grad and same(y.detach(), rotate(x.detach(), cos.detach(), sin, backend="torch"))


# --- dispatch -------------------------------------------------------------------------------------


def test_auto_dispatch_rules(cpp, monkeypatch):
    cos, sin = tables(torch.arange(64), 64)
    big = randn(1, 2 * AUTO_MIN_ELEMENTS // (64 * 64), 64, 64)
    small = randn(1, 1, 64, 64)
    assert _kernel_backend("auto", big, cos, sin, inplace=False) == "cpp"
    assert _kernel_backend("auto", big, cos, sin, inplace=True) == "cpp"
    assert _kernel_backend("auto", small, cos, sin, inplace=False) is None
    assert _kernel_backend("auto", big.double(), cos, sin, inplace=False) is None
    assert _kernel_backend("auto", big[..., ::2], cos[:, :16], sin[:, :16], inplace=False) is None
    assert _kernel_backend("torch", big, cos, sin, inplace=False) is None
    expanded = big[:, :1].expand(big.shape)  # one head seen 32 times: in place would rotate it 32 times
    assert _kernel_backend("cpp", expanded, cos, sin, inplace=True) is None
    assert same(rotate(expanded, cos, sin, backend="cpp"), rotate(expanded, cos, sin, backend="torch"))
    assert same(rotate(big, cos, sin), rotate(big, cos, sin, backend="torch"))
    monkeypatch.setenv("ROPELAB_KERNELS", "0")
    assert _kernel_backend("auto", big, cos, sin, inplace=False) is None
    with pytest.raises(KernelUnavailableError, match="ROPELAB_KERNELS=0"):
        rotate(big, cos, sin, backend="cpp")


class _OnCuda:
    """A CPU tensor that reports a CUDA device: what ``_kernel_backend`` reads of a CUDA tensor (device,
    dtype, strides, size, grad flag), so the selection runs on a machine without CUDA."""

    device = torch.device("cuda", 0)

    def __init__(self, t: torch.Tensor):
        self._t = t

    def __getattr__(self, name):
        return getattr(self._t, name)


def test_auto_picks_triton_on_cuda_tensors_when_it_imports(monkeypatch):
    cos, sin = tables(torch.arange(64), 64)
    x = _OnCuda(randn(1, 2, 64, 64))  # small: on CUDA, auto takes the kernel at any size
    real_check = fused.triton_error.__wrapped__  # uncached
    monkeypatch.setattr(fused, "triton_error", lambda: None)
    assert _kernel_backend("auto", x, cos, sin, inplace=False) == "triton"
    assert _kernel_backend("auto", x, cos, sin, inplace=True) == "triton"
    assert (
        _kernel_backend("auto", _OnCuda(randn(1, 2, 64, 64, dtype=torch.bfloat16)), cos, sin, inplace=False)
        == "triton"
    )
    # where the kernel does not apply, auto takes the torch path
    assert _kernel_backend("auto", _OnCuda(x._t.double()), cos, sin, inplace=False) is None
    assert _kernel_backend("auto", _OnCuda(x._t[..., ::2]), cos[:, :16], sin[:, :16], inplace=False) is None
    assert _kernel_backend("torch", x, cos, sin, inplace=False) is None
    monkeypatch.setenv("ROPELAB_KERNELS", "0")
    assert _kernel_backend("auto", x, cos, sin, inplace=False) is None
    assert _kernel_backend("triton", x, cos, sin, inplace=False) == "triton"  # explicit still runs
    monkeypatch.delenv("ROPELAB_KERNELS")
    # triton missing or failing to import: auto falls back, an explicit request says why
    monkeypatch.setattr(fused, "triton_error", lambda: "import of triton failed (ImportError: test)")
    assert _kernel_backend("auto", x, cos, sin, inplace=False) is None
    with pytest.raises(KernelUnavailableError, match=r"ImportError: test"):
        _kernel_backend("triton", x, cos, sin, inplace=False)
    monkeypatch.setattr(fused, "triton_available", lambda: False)
    assert real_check() == "the triton package is not installed"


def test_explicit_backend_errors():
    cos, sin = tables(torch.arange(4), 8)
    x = randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match=r"unknown rotary backend 'cuda'.*auto, torch, cpp, triton"):
        rotate(x, cos, sin, backend="cuda")
    with pytest.raises(KernelUnavailableError, match="float32, bfloat16, float16"):
        rotate(x.double(), cos, sin, backend="cpp")
    with pytest.raises(KernelUnavailableError, match="contiguous last dim"):
        rotate(randn(1, 2, 4, 16)[..., ::2], cos, sin, backend="cpp")
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(KernelUnavailableError, match="triton"):
            rotate(x, cos, sin, backend="triton")
    q = x.clone()
    with pytest.raises(ValueError, match="unknown rotary backend"):
        apply_rotary_(q, x.clone(), cos, sin, backend="nope")
    assert torch.equal(q, x)  # nothing written


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(build, "_state", {"tried": False, "ops": None, "error": None})

    def broken():
        raise KernelUnavailableError("could not build the C++ rotary kernel: no compiler (test)")

    monkeypatch.setattr(build, "_build", broken)
    cos, sin = tables(torch.arange(64), 64)
    x = randn(1, AUTO_MIN_ELEMENTS // (64 * 64), 64, 64)
    with pytest.warns(RuntimeWarning, match="no compiler"):
        out = rotate(x, cos, sin)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert same(rotate(x, cos, sin), out)  # no second warning
    assert same(out, rotate(x, cos, sin, backend="torch"))
    with pytest.raises(KernelUnavailableError, match="no compiler"):
        rotate(x, cos, sin, backend="cpp")


# --- Triton, under its interpreter on the CPU --------------------------------------------------------

_TRITON_CHECK = textwrap.dedent(
    """
    import itertools, torch
    from ropelab import apply_rotary, apply_rotary_, rotate

    def tables(pos, r):
        inv = 1.0 / (10000.0 ** (torch.arange(0, r, 2, dtype=torch.float64) / r))
        a = pos[..., None].double() * inv
        return (1.25 * a.cos()).float(), (1.25 * a.sin()).float()

    bad = []
    g = torch.Generator().manual_seed(0)
    for dtype, layout, r, heads_dim, upcast, per_batch in itertools.product(
        (torch.float32, torch.bfloat16, torch.float16), ("half", "interleaved"), (16, 10), (1, 2),
        (False, True), (False, True),
    ):
        s = 5
        pos = torch.stack((torch.arange(s), 40 + torch.arange(s))) if per_batch else torch.arange(90, 90 + s)
        cos, sin = tables(pos, r)
        q = (4 * torch.randn(2, 3, s, 16, generator=g)).to(dtype)
        k = (4 * torch.randn(2, 1, s, 16, generator=g)).to(dtype)
        if heads_dim == 2:
            q, k = q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous()
        kw = dict(layout=layout, heads_dim=heads_dim, upcast=upcast)
        ref = apply_rotary(q, k, cos, sin, backend="torch", **kw)
        out = apply_rotary(q, k, cos, sin, backend="triton", **kw)
        q2, k2 = q.clone(), k.clone()
        apply_rotary_(q2, k2, cos, sin, backend="triton", **kw)
        for a, b in ((out[0], ref[0]), (out[1], ref[1]), (q2, ref[0]), (k2, ref[1])):
            if not torch.equal(a, b):
                bad.append((str(dtype), layout, r, heads_dim, upcast, per_batch))
    # autograd through the triton backend
    x = torch.randn(1, 2, 5, 16, generator=g).requires_grad_()
    cos, sin = tables(torch.arange(5), 16)
    gy = torch.randn(1, 2, 5, 16, generator=g)
    gt = torch.autograd.grad(rotate(x, cos, sin, backend="triton"), x, gy)[0]
    gr = torch.autograd.grad(rotate(x, cos, sin, backend="torch"), x, gy)[0]
    if not torch.equal(gt, gr):
        bad.append("grad")
    print("BAD", bad)
    """
)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_kernel_under_interpreter_matches_torch_path():
    env = {**os.environ, "TRITON_INTERPRET": "1", "ROPELAB_KERNELS": "0"}
    src = str(Path(core.__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", _TRITON_CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "BAD []", done.stdout[-3000:]


# --- cos/sin cache ----------------------------------------------------------------------------------

TRAINED = 2048


def make_rope(method: str, head_dim: int = 64) -> Rope:
    params: dict = {"head_dim": head_dim, "base": 10000.0}
    if method != "default":
        params["factor"] = 4.0
    if method in ("yarn", "dynamic", "llama3", "longrope"):
        params["original_max_position_embeddings"] = TRAINED
    if method == "longrope":
        params["short_factor"] = [1.0] * (head_dim // 2)
        params["long_factor"] = [4.0] * (head_dim // 2)
    return Rope(method, **params)


@pytest.mark.parametrize("method", ["default", "yarn", "dynamic", "llama3", "longrope"])
def test_cached_cos_sin_equals_uncached(method):
    rope = make_rope(method)
    requests = [
        torch.arange(100),
        torch.arange(1000, 1100),  # a KV-cache step: grows the table
        torch.stack((torch.arange(50), torch.arange(50) + 3000)),  # per-batch positions [b, s]
        torch.tensor([5, 5, 0, 4000, 17]),
        torch.arange(3 * TRAINED),  # dynamic / longrope: new frequencies past the trained length
        torch.tensor([3 * TRAINED - 1]),
        torch.arange(0, dtype=torch.long),
    ]
    for dtype, precision in itertools.product([torch.float32, torch.bfloat16], ["float64", "float32"]):
        for pos in requests:
            kw = {"dtype": dtype, "precision": precision}
            cached = rope.cos_sin(pos, **kw)
            fresh = rope.cos_sin(pos, cache=False, **kw)
            again = rope.cos_sin(pos, **kw)  # now from the table, whatever the first call did
            for a, b, c in zip(cached, fresh, again, strict=True):
                assert same(a, b) and same(c, b), (method, dtype, precision, pos[:3])
    assert 0 < len(rope._tables) <= rope._tables.max_entries


def test_cache_grows_with_only_the_new_rows(monkeypatch):
    rope = make_rope("yarn")
    calls: list[tuple[int, int]] = []
    original = core._cos_sin_rows

    def spy(pos, *args):
        calls.append((int(pos.min()), int(pos.max())) if pos.numel() else (0, -1))
        return original(pos, *args)

    monkeypatch.setattr(core, "_cos_sin_rows", spy)
    rope.cos_sin(torch.arange(4096))
    assert calls == [(0, 4096 + 512 - 1)]  # the request plus slack (1/8 of the table, at least 256)
    rows = rope._tables.rows(next(iter(rope._tables._entries)))
    rope.cos_sin(torch.arange(4096, 4200))  # inside the slack: no computation
    rope.cos_sin(torch.arange(40).flip(0))
    assert len(calls) == 1
    rope.cos_sin(torch.arange(rows, rows + 100))  # past it: only rows from `rows` on
    assert len(calls) == 2 and calls[1][0] == rows
    rope.cos_sin(torch.arange(1_000_000, 1_000_040))  # far away: computed directly, table untouched
    assert calls[2] == (1_000_000, 1_000_039)
    rope.cos_sin(torch.tensor([rows + 5000]))  # a decode step: computed directly
    assert calls[3] == (rows + 5000, rows + 5000)
    assert rope._tables.rows(next(iter(rope._tables._entries))) > rows  # only the one table, grown once
    out = rope.cos_sin(torch.arange(64))[0]
    out.fill_(7.0)  # results are copies: the table is unchanged
    assert not (rope.cos_sin(torch.arange(64))[0] == 7.0).any()


def test_dynamic_method_shares_table_below_trained_length_and_bypasses_decode_past_it():
    rope = make_rope("dynamic")
    rope.cos_sin(torch.arange(100))
    rope.cos_sin(torch.arange(200))  # seq_len 200: same frequencies as 100, same table
    assert len(rope._tables) == 1
    rope.cos_sin(torch.arange(3 * TRAINED))  # new frequencies: a second table
    assert len(rope._tables) == 2
    for n in range(3 * TRAINED, 3 * TRAINED + 5):  # past it, every length has new frequencies: no tables
        pos = torch.arange(n - 40, n)  # a chunk of 40 (single steps bypass the cache anyway)
        cached, fresh = rope.cos_sin(pos), rope.cos_sin(pos, cache=False)
        assert same(cached[0], fresh[0])
    assert len(rope._tables) == 2


# --- the kernel cache: an interrupted build never hangs, nothing unverified is loaded (issue 11) ------

_SRC = str(Path(build.__file__).parents[2])
_USE_KERNEL = textwrap.dedent(
    """
    import warnings, torch
    warnings.simplefilter("always")
    from ropelab import rotate
    from ropelab.kernels import cpu_kernel
    from ropelab.rope.apply import AUTO_MIN_ELEMENTS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops = cpu_kernel()
    inv = 1.0 / (10000.0 ** (torch.arange(0, 64, 2, dtype=torch.float64) / 64))
    a = torch.arange(64)[:, None].double() * inv
    cos, sin = a.cos().float(), a.sin().float()
    x = torch.randn(1, 2 * AUTO_MIN_ELEMENTS // (64 * 64), 64, 64, generator=torch.Generator().manual_seed(0))
    same = torch.equal(rotate(x, cos, sin), rotate(x, cos, sin, backend="torch"))
    print("KERNEL", ops is not None, "SAME", same, "WARNINGS", len(caught))
    for w in caught:
        print("W", str(w.message).replace("\\n", " | "))
    """
)


def _kernel_env(cache: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "ROPELAB_KERNELS_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("ROPELAB_KERNELS", None)
    return {**env, **extra}


def _use_kernel(cache: Path, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _USE_KERNEL],
        env=_kernel_env(cache, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.skipif(not HAVE_CXX, reason="no C++ compiler")
def test_interrupted_first_build_does_not_hang_later_processes(tmp_path):
    """kill -9 during the first build leaves torch's build lock behind; the next process must neither
    wait forever nor fail: it sees the owner is gone, and retries (here with a compiler that fails at
    once, to keep the test short: it then takes the torch path with one warning)."""
    cache = tmp_path / "kernels"
    first = subprocess.Popen(
        [sys.executable, "-c", "from ropelab.kernels import cpu_kernel; cpu_kernel()"],
        env=_kernel_env(cache),
        start_new_session=True,  # its compiler children die with it
    )
    try:
        deadline = time.monotonic() + 90
        while not list(cache.glob("*/lock")):
            assert first.poll() is None and time.monotonic() < deadline, "the build never started"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert list(cache.glob("*/lock")), "the killed build should leave its lock (the state under test)"
    start = time.monotonic()
    try:
        done = _use_kernel(cache, timeout=60, CXX="false")
    except subprocess.TimeoutExpired:
        pytest.fail("a process reaching the kernel hangs on the lock of a killed build")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "KERNEL False SAME True WARNINGS 1" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "interrupted build" in done.stdout
    assert time.monotonic() - start < 60
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700  # the cache is private to the user


def _copy_of_built_cache(folder: Path) -> tuple[Path, list[Path]]:
    """A copy of this session's kernel cache (built by the ``cpp`` fixture) and its libraries."""
    cache = folder / "kernels"
    shutil.copytree(build.build_dir(), cache, ignore=shutil.ignore_patterns("lock", "*.lock"))
    libraries = sorted(cache.glob("*/*.so"))
    assert libraries, f"no built library under {cache}"
    return cache, libraries


def test_damaged_cached_library_is_not_loaded(cpp, tmp_path):
    """A truncated .so (a Bus error on load) or a replaced one (its load-time code runs) is caught by
    the hash recorded at build time: not loaded, rebuilt, and apply_rotary gives the right numbers.

    To keep the test short the rebuild fails: the compiler on PATH answers version queries but refuses
    to compile, so the torch path is taken. (ninja sees the copied build as up to date, so without the
    check the damaged library itself would be loaded.) One process tries both caches."""
    cc, cxx = os.environ.get("CC", "cc"), os.environ.get("CXX", "c++")
    real = shutil.which(cxx)
    if shutil.which(cc) is None or real is None or os.sep in cxx:
        pytest.skip("no C compiler, or CXX is a path")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / cxx
    wrapper.write_text(
        f'#!/bin/sh\nfor a in "$@"; do case "$a" in -c|-o|-shared) exit 1;; esac; done\nexec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    marker = tmp_path / "load-time-code-ran"
    source = tmp_path / "planted.c"
    source.write_text(
        "#include <stdio.h>\n"
        "__attribute__((constructor)) static void planted(void) {\n"
        f'  FILE *f = fopen("{marker}", "w"); if (f) fclose(f);\n'
        "}\n"
    )
    planted = tmp_path / "planted.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(planted), str(source)], check=True)
    caches = []
    for damage in ("replaced", "truncated"):
        cache, libraries = _copy_of_built_cache(tmp_path / damage)
        for library in libraries:
            if damage == "truncated":
                data = library.read_bytes()
                library.write_bytes(data[: len(data) // 2])
            else:
                shutil.copy(planted, library)
        caches.append(str(cache))
    script = "import os, sys\nfrom ropelab.kernels import build\nfor cache in sys.argv[1:]:\n"
    script += "    os.environ['ROPELAB_KERNELS_DIR'] = cache\n"
    script += "    build._state.update(tried=False, ops=None, error=None)\n"
    script += textwrap.indent(_USE_KERNEL, "    ")
    done = subprocess.run(
        [sys.executable, "-c", script, *caches],
        env=_kernel_env(tmp_path, PATH=os.pathsep.join((str(bin_dir), os.environ.get("PATH", "")))),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not marker.exists(), "code from an unverified library ran"
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.count("KERNEL False SAME True WARNINGS 1") == 2, done.stdout + done.stderr[-2000:]
    assert done.stdout.count("does not match the sha256") == 2, done.stdout


def test_built_library_has_its_hash_recorded(cpp):
    import hashlib

    libraries = sorted(build.build_dir().glob("*/*.so"))
    recorded = [lib for lib in libraries if lib.with_name(lib.name + ".sha256").exists()]
    assert recorded, f"no .sha256 next to {libraries}"
    for lib in recorded:
        digest = lib.with_name(lib.name + ".sha256").read_text().split()[0]
        assert digest == hashlib.sha256(lib.read_bytes()).hexdigest()
