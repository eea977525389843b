// Fused RoPE rotation on the CPU: one read and one write of q (or k), half cos/sin tables shared by
// every head. Built on first use by ropelab/kernels/build.py (torch.utils.cpp_extension.load).
//
// x, out: [b, h, s, d], any strides with a contiguous last dim (the caller transposes [b, s, h, d]
// into this view). cos, sin: [B, s, r/2] contiguous, B = 1 (shared) or b (per-batch position ids).
// Channels r..d are copied through (out-of-place) or left alone (in place).
//
// Rounding, for bf16/fp16 x:
//   upcast = false: every product and the sum are rounded to x's dtype, in the order of
//                   q * cos + rotate_half(q) * sin; bit-identical to ropelab's torch path and to
//                   transformers' apply_rotary_pos_emb (cos/sin are in x's dtype).
//   upcast = true:  compute in float32 from float32 tables, round once at the store.
// float32 x: both modes are the float32 arithmetic of the torch path. Compiled with
// -ffp-contract=off so that a*c - b*s is never fused into an FMA (that would change the last bit).
//
// Loops are plain C++ that the compiler vectorises (-O3 -march=native), except bf16 in the half layout
// with per-product rounding, written out for AVX-512 where available. Work is split over (batch, block of
// kBlock positions) units on torch's thread count (OpenMP, dynamic schedule: a thread that the OS pauses
// does not hold up the others); each unit walks every head, so its cos/sin rows stay in L1.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

namespace {

struct F32 {
  using storage = float;
  static inline float load(float v) { return v; }
  static inline float store(float v) { return v; }
  static inline float store_exact(float v) { return v; }
  static inline float round(float v) { return v; }
};

struct BF16 {
  using storage = uint16_t;
  static inline float load(uint16_t v) {
    const uint32_t u = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  // Round to nearest even, as c10::BFloat16; NaN becomes the canonical quiet NaN.
  static inline uint16_t store(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (u & 0x7fffffffu) > 0x7f800000u ? uint16_t{0x7fc0} : static_cast<uint16_t>(rounded);
  }
  // store() for a sum of two values that are bf16 or NaN: every NaN such a sum can be (a bf16 NaN's payload,
  // the default NaN) has zero low 16 bits and passes the rounding unchanged, so no NaN case is needed.
  static inline uint16_t store_exact(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  // load(store(f)) for a product of two bf16 values, in 32-bit integer arithmetic (mixed widths keep the
  // loop from vectorising). No NaN case: such a product is finite, inf, the default NaN or a NaN with a
  // bf16 payload, and every one of those has zero low 16 bits, which the rounding leaves unchanged.
  static inline float round(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    float out;
    std::memcpy(&out, &u, sizeof out);
    return out;
  }
  static inline float from_bits(uint16_t v) { return load(v); }
  static inline uint16_t to_bits(float f) { return store(f); }
  static inline uint16_t to_bits_exact(float f) { return store_exact(f); }
};

#if defined(__FLT16_MANT_DIG__)
struct F16 {  // the compiler's IEEE half: conversions vectorise (F16C / AVX512-FP16)
  using storage = _Float16;
  static inline float load(_Float16 v) { return static_cast<float>(v); }
  static inline _Float16 store(float f) { return static_cast<_Float16>(f); }
  static inline _Float16 store_exact(float f) { return store(f); }
  static inline float round(float f) { return load(store(f)); }
  static inline float from_bits(uint16_t v) {
    _Float16 h;
    std::memcpy(&h, &v, sizeof h);
    return static_cast<float>(h);
  }
  static inline uint16_t to_bits(float f) {
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t v;
    std::memcpy(&v, &h, sizeof v);
    return v;
  }
  static inline uint16_t to_bits_exact(float f) { return to_bits(f); }
};
#else
struct F16 {
  using storage = c10::Half;
  static inline float load(c10::Half v) { return static_cast<float>(v); }
  static inline c10::Half store(float f) { return c10::Half(f); }
  static inline c10::Half store_exact(float f) { return store(f); }
  static inline float round(float f) { return load(store(f)); }
  static inline float from_bits(uint16_t v) { return static_cast<float>(c10::Half(v, c10::Half::from_bits())); }
  static inline uint16_t to_bits(float f) { return c10::Half(f).x; }
  static inline uint16_t to_bits_exact(float f) { return to_bits(f); }
};
#endif
static_assert(sizeof(F16::storage) == 2, "half storage must be 2 bytes");

// Products and sums of one pair (a, b) with cos c and sin s; `kExact`: round each product to D's dtype
// first (a no-op for float32), as the torch path and transformers do.
template <class D, bool kExact>
inline void rotate_pair(float a, float b, float c, float s, float& o1, float& o2) {
  float ac = a * c, bs = b * s, bc = b * c, as = a * s;
  if (kExact) {
    ac = D::round(ac), bs = D::round(bs), bc = D::round(bc), as = D::round(as);
  }
  o1 = ac - bs;
  o2 = bc + as;
}

#if defined(__AVX512BW__)
// bf16, half layout, products rounded to bf16 (the exact mode): the compute-heaviest case, written out for
// AVX-512 because the compiler's version spends ~30% more instructions on widening and narrowing.
// 32 pairs per step. Widening: unpacklo/hi with zero puts each bf16 in the high half of a 32-bit lane (the
// float it stands for), in an in-lane order that packus undoes when narrowing. Rounding as BF16::round.
namespace avx512 {
inline __m512 widen_lo(__m512i v) { return _mm512_castsi512_ps(_mm512_unpacklo_epi16(_mm512_setzero_si512(), v)); }
inline __m512 widen_hi(__m512i v) { return _mm512_castsi512_ps(_mm512_unpackhi_epi16(_mm512_setzero_si512(), v)); }
inline __m512i rne(__m512 f) {  // u + 0x7fff + lsb: the rounded bf16 is in the high 16 bits
  const __m512i u = _mm512_castps_si512(f);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  return _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
}
inline __m512 round(__m512 f) { return _mm512_castsi512_ps(_mm512_and_si512(rne(f), _mm512_set1_epi32(-65536))); }
inline __m512i narrow(__m512 lo, __m512 hi) {
  return _mm512_packus_epi32(_mm512_srli_epi32(rne(lo), 16), _mm512_srli_epi32(rne(hi), 16));
}

inline void rotate_row_bf16_half_exact(const uint16_t* x, uint16_t* out, const uint16_t* c, const uint16_t* s,
                                       int64_t n2) {
  for (int64_t i = 0; i < n2; i += 32) {
    const __mmask32 m = n2 - i >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((uint64_t{1} << (n2 - i)) - 1);
    const __m512i xa = _mm512_maskz_loadu_epi16(m, x + i), xb = _mm512_maskz_loadu_epi16(m, x + n2 + i);
    const __m512i cv = _mm512_maskz_loadu_epi16(m, c + i), sv = _mm512_maskz_loadu_epi16(m, s + i);
    __m512 o1[2], o2[2];
    for (int h = 0; h < 2; ++h) {
      const __m512 a = h ? widen_hi(xa) : widen_lo(xa), b = h ? widen_hi(xb) : widen_lo(xb);
      const __m512 cc = h ? widen_hi(cv) : widen_lo(cv), ss = h ? widen_hi(sv) : widen_lo(sv);
      o1[h] = _mm512_sub_ps(round(_mm512_mul_ps(a, cc)), round(_mm512_mul_ps(b, ss)));
      o2[h] = _mm512_add_ps(round(_mm512_mul_ps(b, cc)), round(_mm512_mul_ps(a, ss)));
    }
    _mm512_mask_storeu_epi16(out + i, m, narrow(o1[0], o1[1]));
    _mm512_mask_storeu_epi16(out + n2 + i, m, narrow(o2[0], o2[1]));
  }
}
}  // namespace avx512
#endif

// One row of `n2` pairs from `x` into `out`; `out == x` (in place) is allowed: each iteration reads
// its two channels before writing them, and no two iterations touch the same channel.
template <class D, class Tab, bool kExact, bool kInterleaved>
inline void rotate_row(const typename D::storage* x, typename D::storage* out,
                       const typename Tab::storage* __restrict c, const typename Tab::storage* __restrict s,
                       int64_t n2) {
#if defined(__AVX512BW__)
  if constexpr (!kInterleaved && kExact && std::is_same_v<D, BF16> && std::is_same_v<Tab, BF16>) {
    avx512::rotate_row_bf16_half_exact(x, out, c, s, n2);
    return;
  }
#endif
  if constexpr (kInterleaved && sizeof(typename D::storage) == 2) {
    // 16-bit pairs (x[2i], x[2i+1]) as one 32-bit word: contiguous loads and stores vectorise, where
    // the strided 16-bit accesses do not (little-endian: x[2i] is the low half).
    static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian only");
    const uint32_t* xw = reinterpret_cast<const uint32_t*>(x);
    uint32_t* ow = reinterpret_cast<uint32_t*>(out);
#pragma GCC ivdep
    for (int64_t i = 0; i < n2; ++i) {
      const uint32_t w = xw[i];
      float o1, o2;
      rotate_pair<D, kExact>(D::from_bits(static_cast<uint16_t>(w & 0xffffu)),
                             D::from_bits(static_cast<uint16_t>(w >> 16)), Tab::load(c[i]), Tab::load(s[i]),
                             o1, o2);
      const uint32_t lo = kExact ? D::to_bits_exact(o1) : D::to_bits(o1);
      const uint32_t hi = kExact ? D::to_bits_exact(o2) : D::to_bits(o2);
      ow[i] = lo | (hi << 16);
    }
    return;
  }
#pragma GCC ivdep
  for (int64_t i = 0; i < n2; ++i) {
    const int64_t i1 = kInterleaved ? 2 * i : i, i2 = kInterleaved ? 2 * i + 1 : i + n2;
    float o1, o2;
    rotate_pair<D, kExact>(D::load(x[i1]), D::load(x[i2]), Tab::load(c[i]), Tab::load(s[i]), o1, o2);
    out[i1] = kExact ? D::store_exact(o1) : D::store(o1);
    out[i2] = kExact ? D::store_exact(o2) : D::store(o2);
  }
}

constexpr int64_t kBlock = 16;            // positions per work unit: their tables stay in L1 across heads
constexpr int64_t kSerialBelow = 1 << 15;  // elements: below this, one thread (no parallel region)

template <class D, class Tab, bool kExact, bool kInterleaved>
void rotate_all(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor* out) {
  using T = typename D::storage;
  using U = typename Tab::storage;
  const int64_t B = x.size(0), H = x.size(1), S = x.size(2), Dm = x.size(3);
  const int64_t n2 = cos.size(2), r = 2 * n2;
  const int64_t xb = x.stride(0), xh = x.stride(1), xs = x.stride(2);
  T* xp = reinterpret_cast<T*>(x.data_ptr());
  T* op = out ? reinterpret_cast<T*>(out->data_ptr()) : nullptr;
  const int64_t ob = out ? out->stride(0) : 0, oh = out ? out->stride(1) : 0, os = out ? out->stride(2) : 0;
  const U* cp = reinterpret_cast<const U*>(cos.data_ptr());
  const U* sp = reinterpret_cast<const U*>(sin.data_ptr());
  const int64_t tb = cos.size(0) == 1 ? 0 : cos.stride(0), ts = cos.stride(1);
  const bool heads_inner = xh < xs;  // [b, s, h, d] memory: walk heads innermost
  const int64_t blocks = (S + kBlock - 1) / kBlock, units = B * blocks;
  const int threads = (x.numel() < kSerialBelow || at::in_parallel_region()) ? 1 : at::get_num_threads();

  auto row = [&](int64_t b, int64_t h, int64_t p) {
    const U* c = cp + b * tb + p * ts;
    const U* s = sp + b * tb + p * ts;
    T* xr = xp + b * xb + h * xh + p * xs;
    T* orow = op == nullptr ? xr : op + b * ob + h * oh + p * os;
    rotate_row<D, Tab, kExact, kInterleaved>(xr, orow, c, s, n2);
    if (op != nullptr && r < Dm) std::memcpy(orow + r, xr + r, static_cast<size_t>(Dm - r) * sizeof(T));
  };

#pragma omp parallel for num_threads(threads) schedule(dynamic, 4) if (threads > 1)
  for (int64_t u = 0; u < units; ++u) {
    const int64_t b = u / blocks, p0 = (u % blocks) * kBlock, p1 = std::min(S, p0 + kBlock);
    if (heads_inner) {
      for (int64_t p = p0; p < p1; ++p)
        for (int64_t h = 0; h < H; ++h) row(b, h, p);
    } else {
      for (int64_t h = 0; h < H; ++h)
        for (int64_t p = p0; p < p1; ++p) row(b, h, p);
    }
  }
}

template <class D, class Tab>
void dispatch_layout(const at::Tensor& x, const at::Tensor& c, const at::Tensor& s, at::Tensor* out,
                     bool interleaved, bool exact) {
  if (interleaved) {
    exact ? rotate_all<D, Tab, true, true>(x, c, s, out) : rotate_all<D, Tab, false, true>(x, c, s, out);
  } else {
    exact ? rotate_all<D, Tab, true, false>(x, c, s, out) : rotate_all<D, Tab, false, false>(x, c, s, out);
  }
}

void check(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool upcast) {
  TORCH_CHECK(x.device().is_cpu() && cos.device().is_cpu() && sin.device().is_cpu(), "CPU tensors only");
  TORCH_CHECK(x.dim() == 4, "x must be [b, h, s, d]");
  TORCH_CHECK(x.stride(3) == 1, "x must have a contiguous last dim");
  TORCH_CHECK(cos.dim() == 3 && sin.sizes() == cos.sizes(), "cos/sin must be [B, s, r/2] and equal");
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous(), "cos/sin must be contiguous");
  TORCH_CHECK(cos.size(0) == 1 || cos.size(0) == x.size(0), "cos/sin batch must be 1 or x's batch");
  TORCH_CHECK(cos.size(1) == x.size(2), "cos/sin must cover x's sequence length");
  TORCH_CHECK(2 * cos.size(2) <= x.size(3), "rotary dim exceeds head dim");
  const auto want = (upcast || x.scalar_type() == at::kFloat) ? at::kFloat : x.scalar_type();
  TORCH_CHECK(cos.scalar_type() == want && sin.scalar_type() == want, "cos/sin dtype: expected ", want);
}

void run(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor* out, bool interleaved,
         bool upcast) {
  check(x, cos, sin, upcast);
  switch (x.scalar_type()) {
    case at::kFloat:
      return dispatch_layout<F32, F32>(x, cos, sin, out, interleaved, false);
    case at::kBFloat16:
      return upcast ? dispatch_layout<BF16, F32>(x, cos, sin, out, interleaved, false)
                    : dispatch_layout<BF16, BF16>(x, cos, sin, out, interleaved, true);
    case at::kHalf:
      return upcast ? dispatch_layout<F16, F32>(x, cos, sin, out, interleaved, false)
                    : dispatch_layout<F16, F16>(x, cos, sin, out, interleaved, true);
    default:
      TORCH_CHECK(false, "unsupported dtype ", x.scalar_type(), " (float32, bfloat16, float16)");
  }
}

void rotary_out(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out,
                bool interleaved, bool upcast) {
  TORCH_CHECK(out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type() && out.stride(3) == 1,
              "out must have x's shape and dtype and a contiguous last dim");
  TORCH_CHECK(out.data_ptr() != x.data_ptr(), "out must not alias x; use rotary_");
  run(x, cos, sin, &out, interleaved, upcast);
}

void rotary_inplace(at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool interleaved,
                    bool upcast) {
  run(x, cos, sin, nullptr, interleaved, upcast);
}

}  // namespace

TORCH_LIBRARY(ropelab_kernels, m) {
  m.def("rotary_out(Tensor x, Tensor cos, Tensor sin, Tensor(a!) out, bool interleaved, bool upcast) -> ()");
  m.def("rotary_(Tensor(a!) x, Tensor cos, Tensor sin, bool interleaved, bool upcast) -> ()");
}

TORCH_LIBRARY_IMPL(ropelab_kernels, CPU, m) {
  m.impl("rotary_out", &rotary_out);
  m.impl("rotary_", &rotary_inplace);
}
