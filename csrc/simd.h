// Portable SIMD for the CPU kernels: GCC/Clang vector extensions, one source compiled for several
// instruction sets with the target attribute, chosen at run time (ATen does the same per kernel
// with CPU_CAPABILITY; an extension cannot reuse that machinery, and -march=native would make a
// build that crashes on an older CPU).
//
// Conversions between float32 and the 16-bit dtypes round exactly as c10's scalar conversions do
// (round to nearest even; NaN to c10's quiet NaN). With -ffp-contract=off (setup.py), a vector body
// and its scalar tail agree bit for bit, and the numerics do not depend on which instruction set ran.

#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define GOLDEN_FAST_X86_ISAS 1
#define GF_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define GF_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#else
#define GOLDEN_FAST_X86_ISAS 0
#endif

#define GF_INLINE inline __attribute__((always_inline))

#if defined(__GNUC__) && !defined(__clang__)
// Vectors wider than the baseline's registers only live inside always-inline helpers that are
// inlined into functions targeting AVX2/AVX-512; GCC's ABI warning is about out-of-line calls.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace golden_fast::simd {

// ---- instruction set chosen at run time --------------------------------------------------------
enum class Isa { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "default";
  }
}

// The best set this CPU supports, lowered (never raised) by GOLDEN_FAST_CPU_ISA=default|avx2|avx512,
// which lets tests run every variant on one machine. Computed once per process.
inline Isa active_isa() {
  static const Isa isa = [] {
    Isa best = Isa::kDefault;
#if GOLDEN_FAST_X86_ISAS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
      best = Isa::kAvx2;
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl")) {
        best = Isa::kAvx512;
      }
    }
#endif
    const char* env = std::getenv("GOLDEN_FAST_CPU_ISA");
    if (env != nullptr) {
      const std::string_view want(env);
      const Isa asked = want == "avx512" ? Isa::kAvx512 : want == "avx2" ? Isa::kAvx2 : Isa::kDefault;
      if (static_cast<int>(asked) < static_cast<int>(best)) best = asked;
    }
    return best;
  }();
  return isa;
}

// ---- vectors of N float lanes: N = 4 (SSE2, NEON), 8 (AVX2), 16 (AVX-512) --------------------
// Each variant uses its target's native width: a vector wider than the target's registers is kept
// in memory by GCC, which made the baseline variant several times slower than scalar code.
template <int N>
struct Vec {
  typedef float f32 __attribute__((vector_size(4 * N)));
  typedef uint32_t u32 __attribute__((vector_size(4 * N)));
  typedef uint16_t u16 __attribute__((vector_size(2 * N)));
};

template <typename To, typename From>
GF_INLINE To bit_cast(const From& x) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between different sizes");
  To y;
  std::memcpy(&y, &x, sizeof y);
  return y;
}

template <typename V, typename T>
GF_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);  // unaligned load
  return v;
}

template <typename V, typename T>
GF_INLINE void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}

// Lanes<W, N>::load / store: N weights <-> float32, in plain vector arithmetic. (F16C's vcvtph2ps
// would be shorter for float16, but GCC 12 scalarises _Float16 vector conversions, and intrinsics
// cannot be called from these target-neutral helpers.)
template <typename W, int N>
struct Lanes;

template <int N>
struct Lanes<float, N> {
  using F = typename Vec<N>::f32;
  static GF_INLINE F load(const float* p) { return simd::load<F>(p); }
  static GF_INLINE void store(float* p, const F& x) { simd::store(p, x); }
};

template <int N>
struct Lanes<c10::BFloat16, N> {
  using F = typename Vec<N>::f32;
  using U = typename Vec<N>::u32;
  using H = typename Vec<N>::u16;
  static GF_INLINE F load(const c10::BFloat16* p) {
    return bit_cast<F>(__builtin_convertvector(simd::load<H>(p), U) << 16);  // exact
  }
  // c10::detail::round_to_nearest_even, lane by lane.
  static GF_INLINE void store(c10::BFloat16* p, const F& x) {
    const U u = bit_cast<U>(x);
    U r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    r = (x != x) ? (U{} + 0x7FC0u) : r;
    simd::store(p, __builtin_convertvector(r, H));
  }
};

template <int N>
struct Lanes<c10::Half, N> {
  using F = typename Vec<N>::f32;
  using U = typename Vec<N>::u32;
  using H = typename Vec<N>::u16;
  // c10::detail::fp16_ieee_to_fp32_value (branch-free, exact), lane by lane.
  static GF_INLINE F load(const c10::Half* p) {
    const U w = __builtin_convertvector(simd::load<H>(p), U) << 16;
    const U sign = w & 0x80000000u;
    const U two_w = w + w;
    const F normalized = bit_cast<F>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const F denormalized = bit_cast<F>((two_w >> 17) | (126u << 23)) - 0.5f;
    const U magnitude = (two_w < (1u << 27)) ? bit_cast<U>(denormalized) : bit_cast<U>(normalized);
    return bit_cast<F>(sign | magnitude);
  }
  // c10::detail::fp16_ieee_from_fp32_value (round to nearest even through float addition), lane by
  // lane. setup.py builds with -ffp-contract=off, so no variant fuses a product into an FMA.
  static GF_INLINE void store(c10::Half* p, const F& f) {
    const U w = bit_cast<U>(f);
    F base = (bit_cast<F>(w & 0x7FFFFFFFu) * 0x1.0p+112f) * 0x1.0p-110f;
    const U shl1_w = w + w;
    const U sign = w & 0x80000000u;
    U bias = shl1_w & 0xFF000000u;
    bias = (bias < 0x71000000u) ? (U{} + 0x71000000u) : bias;
    base = bit_cast<F>((bias >> 1) + 0x07800000u) + base;
    const U b = bit_cast<U>(base);
    const U nonsign = ((b >> 13) & 0x00007C00u) + (b & 0x00000FFFu);
    const U r = (sign >> 16) | ((shl1_w > 0xFF000000u) ? (U{} + 0x7E00u) : nonsign);
    simd::store(p, __builtin_convertvector(r, H));
  }
};

}  // namespace golden_fast::simd
