// rank1_apply on CPU: weight += alpha * (sum of n rank-one terms), in place.
//
// The contract (shapes, numerics) lives in golden_fast/ops/rank1.py next to the torch reference;
// this file only implements it. Summary: weight (R, C) += alpha * A (R, n) @ B (C, n)^T, where
// (A, B) = (u, v), or (v, u) when `transposed` (GPT-2 Conv1D stores the weight as (m, d)).
// The sum over n is accumulated in float32 (float64 for a float64 weight) and converted to the
// weight's dtype once per element: no fp32 copy of the whole weight is ever made, which matters for
// a 16-bit 7B model whose down-projection alone is 90 MB in bf16.
//
// float32/float64 weights: one in-place BLAS GEMM (nothing to fuse). float16/bfloat16 weights: a
// fused SIMD loop for n <= 8 (one pass: load, convert, add, round, store), BLAS on L2-sized tiles of
// rows plus the same fused add beyond; both in one OpenMP region (at::parallel_for) over row blocks,
// compiled for SSE2/NEON, AVX2 and AVX-512 and chosen at run time (csrc/simd.h). Measured on 2
// shared AVX-512 cores, 2048 x 8192 bf16: 2-3x the torch reference for n <= 16, 1x at n = 64.

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <algorithm>
#include <sstream>
#include <string>

#include "simd.h"

namespace golden_fast {
namespace {

// Up to this many terms the fused loop (read w, add, write w: one pass over the weight) wins; beyond
// it the update is compute-bound and BLAS on row chunks is faster (measured with bf16 and fp16
// weights of 2048 x 8192 on an AVX-512 CPU; torch's own GEMM is slow for 2 <= n <= 8).
constexpr int64_t kDirectMaxN = 8;
// The BLAS path computes this many bytes of fp32 sums at a time per thread, then adds them into the
// weight rows while they are still in L2. Bounded, independent of the weight.
constexpr int64_t kTileBytes = int64_t{512} << 10;
// Minimum elements per parallel task.
constexpr int64_t kGrainElems = int64_t{1} << 15;

int64_t grain_rows(int64_t cols) { return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(cols, 1)); }

std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

void check_inputs(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v, bool transposed) {
  const std::string shapes = "weight " + shape_str(weight) + ", u " + shape_str(u) + ", v " +
                             shape_str(v) + " (transposed=" + (transposed ? "True" : "False") + ")";
  TORCH_CHECK_VALUE(weight.dim() == 2 && u.dim() == 2 && v.dim() == 2,
                    "rank1_apply: weight, u and v must be 2-D; got ", shapes);
  const int64_t d = u.size(0), m = v.size(0);
  TORCH_CHECK_VALUE(u.size(1) == v.size(1), "rank1_apply: u (d, n) and v (m, n) need the same n; got ", shapes);
  if (transposed) {
    TORCH_CHECK_VALUE(weight.size(0) == m && weight.size(1) == d,
                      "rank1_apply: a transposed weight is (m, d) for u (d, n), v (m, n); got ", shapes);
  } else {
    TORCH_CHECK_VALUE(weight.size(0) == d && weight.size(1) == m,
                      "rank1_apply: weight is (d, m) for u (d, n), v (m, n); got ", shapes);
  }
  const auto wt = weight.scalar_type();
  TORCH_CHECK_VALUE(wt == at::kFloat || wt == at::kHalf || wt == at::kBFloat16 || wt == at::kDouble,
                    "rank1_apply: weight must be float32, float16, bfloat16 or float64; got ", wt);
  TORCH_CHECK_VALUE(u.is_floating_point() && v.is_floating_point(),
                    "rank1_apply: u and v must be floating point; got ", u.scalar_type(), " and ",
                    v.scalar_type());
  TORCH_CHECK(weight.device().is_cpu() && u.device().is_cpu() && v.device().is_cpu(),
              "rank1_apply (CPU kernel): all tensors must be on the CPU; got weight on ", weight.device(),
              ", u on ", u.device(), ", v on ", v.device());
}

// One call's worth of work on the weight rows [r0, r1). Weight rows have unit column stride.
template <typename W>
struct Job {
  W* w;
  int64_t cols, row_stride;
  float alpha;
  const float* a;   // fused path: (rows, n) contiguous
  const float* bt;  // fused path: (n, cols) contiguous
  int64_t n;
  const float* tile;  // tile path: (rows of the tile, cols), its row 0 is weight row tile_row0
  int64_t tile_row0;
};

// Fused path, small n: W[r, c] = W(float(W[r, c]) + alpha * sum_j a[r, j] * bt[j, c]), one pass.
// The sums of 2N (then N) columns live in registers while the n terms stream from bt, which stays
// in L2 (n <= kDirectMaxN rows). Whole rows, in order: splitting rows into column strips, for L1
// reuse of bt, measured slower (the weight is then no longer read as one stream).
template <typename W, int N>
GF_INLINE void direct_rows(const Job<W>& job, int64_t r0, int64_t r1) {
  using L = simd::Lanes<W, N>;
  using F = typename simd::Vec<N>::f32;
  // Locals, not job.*: stores into the weight could alias the Job as far as the compiler knows.
  W* const w = job.w;
  const float* const a = job.a;
  const float* const bt = job.bt;
  const int64_t cols = job.cols, n = job.n, row_stride = job.row_stride;
  const float alpha = job.alpha;
  for (int64_t r = r0; r < r1; ++r) {
    const float* ar = a + r * n;
    W* wr = w + r * row_stride;
    int64_t c = 0;
    for (; c + 2 * N <= cols; c += 2 * N) {
      F s0 = {}, s1 = {};
      for (int64_t j = 0; j < n; ++j) {
        const float* b = bt + j * cols + c;
        s0 += ar[j] * simd::load<F>(b);
        s1 += ar[j] * simd::load<F>(b + N);
      }
      // The only conversion into W: one rounding per element.
      L::store(wr + c, L::load(wr + c) + alpha * s0);
      L::store(wr + c + N, L::load(wr + c + N) + alpha * s1);
    }
    for (; c < cols; ++c) {  // ragged end: the same operations in the same order, so the same bits
      float s = 0.f;
      for (int64_t j = 0; j < n; ++j) s += ar[j] * bt[j * cols + c];
      wr[c] = static_cast<W>(static_cast<float>(wr[c]) + alpha * s);
    }
  }
}

// Tile path: W[r, c] = W(float(W[r, c]) + alpha * tile[r - tile_row0, c]).
template <typename W, int N>
GF_INLINE void tile_rows(const Job<W>& job, int64_t r0, int64_t r1) {
  using L = simd::Lanes<W, N>;
  using F = typename simd::Vec<N>::f32;
  W* const w = job.w;
  const float* const tile = job.tile;
  const int64_t cols = job.cols, row_stride = job.row_stride, tile_row0 = job.tile_row0;
  const float alpha = job.alpha;
  for (int64_t r = r0; r < r1; ++r) {
    W* wr = w + r * row_stride;
    const float* tr = tile + (r - tile_row0) * cols;
    int64_t c = 0;
    for (; c + N <= cols; c += N) L::store(wr + c, L::load(wr + c) + alpha * simd::load<F>(tr + c));
    for (; c < cols; ++c) wr[c] = static_cast<W>(static_cast<float>(wr[c]) + alpha * tr[c]);
  }
}

// The same bodies compiled for each instruction set, at its native width (inlined into differently
// targeted callers; the baseline is SSE2 on x86-64 and NEON on arm64).
template <typename W>
void direct_default(const Job<W>& j, int64_t r0, int64_t r1) { direct_rows<W, 4>(j, r0, r1); }
template <typename W>
void tile_default(const Job<W>& j, int64_t r0, int64_t r1) { tile_rows<W, 4>(j, r0, r1); }
#if GOLDEN_FAST_X86_ISAS
template <typename W>
GF_TARGET_AVX2 void direct_avx2(const Job<W>& j, int64_t r0, int64_t r1) { direct_rows<W, 8>(j, r0, r1); }
template <typename W>
GF_TARGET_AVX2 void tile_avx2(const Job<W>& j, int64_t r0, int64_t r1) { tile_rows<W, 8>(j, r0, r1); }
template <typename W>
GF_TARGET_AVX512 void direct_avx512(const Job<W>& j, int64_t r0, int64_t r1) { direct_rows<W, 16>(j, r0, r1); }
template <typename W>
GF_TARGET_AVX512 void tile_avx512(const Job<W>& j, int64_t r0, int64_t r1) { tile_rows<W, 16>(j, r0, r1); }
#endif

template <typename W>
using RowsFn = void (*)(const Job<W>&, int64_t, int64_t);

template <typename W>
RowsFn<W> pick(bool direct) {
#if GOLDEN_FAST_X86_ISAS
  switch (simd::active_isa()) {
    case simd::Isa::kAvx512: return direct ? &direct_avx512<W> : &tile_avx512<W>;
    case simd::Isa::kAvx2: return direct ? &direct_avx2<W> : &tile_avx2<W>;
    default: break;
  }
#endif
  return direct ? &direct_default<W> : &tile_default<W>;
}

// float16 / bfloat16 weight (rows, cols) with unit column stride += alpha * a @ b^T.
template <typename W>
void apply_16bit(const at::Tensor& w2, const at::Tensor& a_in, const at::Tensor& b_in, double alpha) {
  const int64_t rows = w2.size(0), cols = w2.size(1), n = a_in.size(1);
  // u and v are small next to the weight (n columns): one converted, contiguous copy of each.
  const at::Tensor a = a_in.to(at::kFloat).contiguous();  // (rows, n)
  Job<W> job{w2.mutable_data_ptr<W>(), cols, rows > 1 ? w2.stride(0) : cols, static_cast<float>(alpha),
             a.const_data_ptr<float>(), nullptr, n, nullptr, 0};
  if (n <= kDirectMaxN) {
    const at::Tensor bt = b_in.to(at::kFloat).t().contiguous();  // (n, cols)
    job.bt = bt.const_data_ptr<float>();
    const RowsFn<W> fn = pick<W>(/*direct=*/true);
    at::parallel_for(0, rows, grain_rows(cols), [&](int64_t r0, int64_t r1) { fn(job, r0, r1); });
    return;
  }
  const at::Tensor bt = b_in.to(at::kFloat).t();  // (n, cols) view
  const RowsFn<W> fn = pick<W>(/*direct=*/false);
  const int64_t chunk = std::clamp<int64_t>(kTileBytes / (cols * int64_t{4}), 1, rows);
  // One parallel region: each thread walks its own rows a tile at a time, with BLAS running
  // single-threaded inside it. (A region per tile, with BLAS threading each GEMM, measured many
  // times slower on a loaded machine: every region ends in a barrier.)
  at::parallel_for(0, rows, chunk, [&](int64_t r0, int64_t r1) {
    at::Tensor tile = at::empty({std::min(chunk, r1 - r0), cols}, a.options());  // (chunk, cols) fp32
    Job<W> mine = job;
    for (int64_t t0 = r0; t0 < r1; t0 += chunk) {
      const int64_t len = std::min(chunk, r1 - t0);
      at::Tensor t = tile.narrow(0, 0, len);
      at::mm_out(t, a.narrow(0, t0, len), bt);  // the fp32 sums of this tile's rows
      mine.tile = t.const_data_ptr<float>();
      mine.tile_row0 = t0;
      fn(mine, t0, t0 + len);
    }
  });
}

// float32 / float64 weight: one GEMM with beta = 1 adds the sums, accumulated in the weight's own
// precision, into the weight and rounds once; w2 is a view, so BLAS writes the caller's storage.
// Nothing to fuse here (no conversion), and MKL/oneDNN's in-place update is as fast as a hand loop.
void apply_gemm(const at::Tensor& w2, const at::Tensor& a_in, const at::Tensor& b_in, double alpha) {
  const auto acc = w2.scalar_type();
  w2.addmm_(a_in.to(acc), b_in.to(acc).t(), /*beta=*/1, /*alpha=*/alpha);
}

// weight (R, C) += alpha * a (R, n) @ b (C, n)^T, with weight rows of unit column stride.
void apply_rowmajor(const at::Tensor& w2, const at::Tensor& a, const at::Tensor& b, double alpha) {
  switch (w2.scalar_type()) {
    case at::kHalf: return apply_16bit<c10::Half>(w2, a, b, alpha);
    case at::kBFloat16: return apply_16bit<c10::BFloat16>(w2, a, b, alpha);
    case at::kFloat:
    case at::kDouble: return apply_gemm(w2, a, b, alpha);
    default: TORCH_CHECK_VALUE(false, "rank1_apply: unsupported weight dtype ", w2.scalar_type());
  }
}

void rank1_apply_cpu(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v, bool transposed,
                     double alpha) {
  check_inputs(weight, u, v, transposed);
  // In place on a weight whose elements share memory (expand()) or that u/v alias is meaningless.
  at::assert_no_internal_overlap(weight);
  at::assert_no_overlap(weight, u);
  at::assert_no_overlap(weight, v);
  if (u.size(1) == 0 || weight.numel() == 0) return;  // no terms, or nothing to update
  // A schema returning () gets no version bump from the autograd fallbacks (they bump returned
  // aliases only), so do what torch.autograd.graph.increment_version does: saved-tensor checks then
  // see the write. Raises for an inference tensor outside inference mode, as built-in ops do.
  weight.unsafeGetTensorImpl()->bump_version();
  // Stored layout W (R, C): the update is a @ b^T with a for the rows and b for the columns.
  const at::Tensor& a = transposed ? v : u;
  const at::Tensor& b = transposed ? u : v;
  if (weight.stride(1) == 1 || weight.size(1) == 1) {
    apply_rowmajor(weight, a, b, alpha);  // contiguous, or a row/column slice of a bigger matrix
  } else if (weight.stride(0) == 1 || weight.size(0) == 1) {
    apply_rowmajor(weight.t(), b, a, alpha);  // a transposed view: update W^T += b a^T instead
  } else {
    // Arbitrary strides (e.g. w[::2, ::3]): work on a compact copy in the weight's own dtype and
    // write it back, so the caller's storage is what changes. Rare; costs one weight-sized copy.
    at::Tensor compact = weight.contiguous();
    apply_rowmajor(compact, a, b, alpha);
    weight.copy_(compact);
  }
}

}  // namespace
}  // namespace golden_fast

// A fragment, not TORCH_LIBRARY: every csrc/<op>.cpp adds its own op to the golden_fast namespace
// without one file having to own it (two TORCH_LIBRARY blocks for one namespace fail at load).
TORCH_LIBRARY_FRAGMENT(golden_fast, m) {
  // Fake (meta) kernel: golden_fast/ops/rank1.py registers it; torch imports that module on demand.
  m.set_python_module("golden_fast.ops.rank1");
  m.def("rank1_apply(Tensor(a!) weight, Tensor u, Tensor v, bool transposed=False, float alpha=1.0) -> ()");
}

TORCH_LIBRARY_IMPL(golden_fast, CPU, m) { m.impl("rank1_apply", &golden_fast::rank1_apply_cpu); }

// Editing is never differentiated. This autograd kernel refuses in-place on a leaf that requires
// grad (as add_ does) and marks outputs as not differentiable; without it the default fallback lets
// the write through silently.
TORCH_LIBRARY_IMPL(golden_fast, Autograd, m) {
  m.impl("rank1_apply", torch::autograd::autogradNotImplementedFallback());
}
