// rank1_apply / rank1_apply_many on CPU: weight += alpha * (sum of n rank-one terms), in place, for
// one weight or for several (the layers of one MEMIT/EMMET edit) in one call.
//
// The contract (shapes, numerics) lives in golden_fast/ops/rank1.py next to the torch reference;
// this file only implements it. Summary: weight (R, C) += alpha * A (R, n) @ B (C, n)^T, where
// (A, B) = (u, v), or (v, u) when `transposed` (GPT-2 Conv1D stores the weight as (m, d)).
// The sum over n is accumulated in float32 (float64 for a float64 weight) and converted to the
// weight's dtype once per element: no fp32 copy of the whole weight is ever made, which matters for
// a 16-bit 7B model whose down-projection alone is 90 MB in bf16.
//
// float32/float16/bfloat16 weights: a fused SIMD loop for n <= 8 (one pass: load, convert, add,
// round, store), and beyond that BLAS on cache-sized 2-D tiles (256 x 512 float32 sums, so each tile
// reads only its rows of u and its rows of v) followed by the same fused add. Every tile of every
// weight is one item of work in ONE OpenMP region (at::parallel_for): 30 small layers keep both
// cores busy and no barrier separates them. rank1_apply is the same engine with one weight, so a
// weight gets bitwise the same result from either op. Kernels are compiled for SSE2/NEON, AVX2 and
// AVX-512 and chosen at run time (csrc/simd.h). float64 weights: one in-place BLAS GEMM each.
// Measured on 2 shared AVX-512 cores: see bench/bench_rank1.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "rank1.h"
#include "simd.h"

namespace golden_fast {
namespace {

// Up to this many terms the fused loop (read w, add, write w: one pass over the weight) wins; beyond
// it the update is compute-bound and BLAS on row chunks is faster (measured with bf16 and fp16
// weights of 2048 x 8192 on an AVX-512 CPU; torch's own GEMM is slow for 2 <= n <= 8).
constexpr int64_t kDirectMaxN = 8;
// The BLAS path computes a tile of this many bytes of fp32 sums at a time per thread, then adds them
// into the weight while they are still in L2. Bounded, independent of the weight and of n.
constexpr int64_t kTileBytes = int64_t{512} << 10;
// Tile width (columns); the height follows from kTileBytes (256 rows x 512 columns).
constexpr int64_t kTileCols = 512;
// Minimum elements per parallel task.
constexpr int64_t kGrainElems = int64_t{1} << 15;

int64_t grain_rows(int64_t cols) { return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(cols, 1)); }

void check_inputs(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v, bool transposed) {
  rank1::check_inputs(weight, u, v, transposed, c10::DeviceType::CPU, "CPU");
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

// ---- the engine: any number of weights, one parallel region -----------------------------------
// One weight, seen row-major: w2 (rows, cols) with unit column stride += alpha * a (rows, n) @ b^T.
struct Plan {
  at::Tensor w2;  // the weight itself, or a transposed view of it (unit column stride)
  at::Tensor a;   // (rows, n) float32, contiguous
  at::Tensor b;   // fused path: bt (n, cols) float32 contiguous; tile path: b (cols, n) float32
  bool direct;    // n <= kDirectMaxN: fused loop, else BLAS tiles
  int64_t row_block, col_block;  // work item size
};

// A piece of work: rows [r0, r1) x columns [c0, c1) of weight `plan`.
struct Item {
  int64_t plan, r0, r1, c0, c1;
};

template <typename W>
Job<W> job_for(const Plan& p, double alpha) {
  const at::Tensor& w2 = p.w2;
  const int64_t rows = w2.size(0), cols = w2.size(1);
  return Job<W>{w2.mutable_data_ptr<W>(), cols, rows > 1 ? w2.stride(0) : cols, static_cast<float>(alpha),
                p.a.const_data_ptr<float>(), p.direct ? p.b.const_data_ptr<float>() : nullptr, p.a.size(1),
                nullptr, 0};
}

// Work of one item on a weight of element type W. `tile` is this thread's float32 scratch buffer.
template <typename W>
void run_item(const Plan& p, const Item& it, double alpha, at::Tensor& tile) {
  Job<W> job = job_for<W>(p, alpha);
  if (p.direct) {
    pick<W>(/*direct=*/true)(job, it.r0, it.r1);  // whole rows: c0 = 0, c1 = cols
    return;
  }
  const int64_t rlen = it.r1 - it.r0, clen = it.c1 - it.c0;
  // The float32 sums of this tile only (rlen x clen <= kTileBytes), then added into the weight while
  // they are still in cache. Both operands are narrowed in both dimensions, so a tile reads rlen + clen
  // rows of u and v rather than all of v: with 10,000 terms on a 3840 x 15360 weight, full-width row
  // tiles would stream all of v (600 MB) once per 8 rows.
  at::Tensor t = tile.narrow(0, 0, rlen * clen).view({rlen, clen});
  at::mm_out(t, p.a.narrow(0, it.r0, rlen), p.b.narrow(0, it.c0, clen).t());
  job.w += it.c0;   // the tile's columns of the weight ...
  job.cols = clen;  // ... and its width, which is also the tile's row stride
  job.tile = t.const_data_ptr<float>();
  job.tile_row0 = it.r0;
  pick<W>(/*direct=*/false)(job, it.r0, it.r1);
}

void run_item_any(const Plan& p, const Item& it, double alpha, at::Tensor& tile) {
  switch (p.w2.scalar_type()) {
    case at::kHalf: return run_item<c10::Half>(p, it, alpha, tile);
    case at::kBFloat16: return run_item<c10::BFloat16>(p, it, alpha, tile);
    case at::kFloat: return run_item<float>(p, it, alpha, tile);
    default:
      TORCH_CHECK(false, std::string("rank1_apply: no fused kernel for ") + c10::toString(p.w2.scalar_type()));
  }
}

// float64 weight: one GEMM with beta = 1 adds the float64 sums into the weight, rounding once; w2 is a
// view, so BLAS writes the caller's storage. Nothing to fuse (no conversion), and nothing to gain
// from a hand loop for the accuracy option.
void apply_gemm(const at::Tensor& w2, const at::Tensor& a_in, const at::Tensor& b_in, double alpha) {
  const auto acc = w2.scalar_type();
  w2.addmm_(a_in.to(acc), b_in.to(acc).t(), /*beta=*/1, /*alpha=*/alpha);
}

// Plans and items for every weight, then ONE parallel region over all items of all weights: small
// weights (a 135M model's layers) keep every thread busy, and no barrier separates the layers.
void apply_many(const std::vector<at::Tensor>& w2s, const std::vector<at::Tensor>& as,
                const std::vector<at::Tensor>& bs, double alpha) {
  std::vector<Plan> plans;
  std::vector<Item> items;
  int64_t tile_elems = 0;
  for (size_t i = 0; i < w2s.size(); ++i) {
    const at::Tensor& w2 = w2s[i];
    if (w2.scalar_type() == at::kDouble) {
      apply_gemm(w2, as[i], bs[i], alpha);
      continue;
    }
    const int64_t rows = w2.size(0), cols = w2.size(1), n = as[i].size(1);
    Plan p;
    p.w2 = w2;
    p.a = as[i].to(at::kFloat).contiguous();  // (rows, n): small next to the weight
    p.direct = n <= kDirectMaxN;
    if (p.direct) {
      p.b = bs[i].to(at::kFloat).t().contiguous();  // (n, cols)
      p.row_block = grain_rows(cols);
      p.col_block = cols;
    } else {
      p.b = bs[i].to(at::kFloat);  // (cols, n), any strides: BLAS reads it transposed
      p.col_block = std::min<int64_t>(cols, kTileCols);
      p.row_block = std::clamp<int64_t>(kTileBytes / (p.col_block * int64_t{4}), 1, rows);
      tile_elems = std::max(tile_elems, p.row_block * p.col_block);
    }
    const auto k = static_cast<int64_t>(plans.size());
    for (int64_t r0 = 0; r0 < rows; r0 += p.row_block) {
      for (int64_t c0 = 0; c0 < cols; c0 += p.col_block) {
        items.push_back({k, r0, std::min(r0 + p.row_block, rows), c0, std::min(c0 + p.col_block, cols)});
      }
    }
    plans.push_back(std::move(p));
  }
  if (items.empty()) return;
  // BLAS runs single-threaded inside the region. (A region per weight or per tile, with BLAS threading
  // each GEMM, measured many times slower on a loaded machine: every region ends in a barrier.)
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t i0, int64_t i1) {
    at::Tensor tile = at::empty({std::max<int64_t>(tile_elems, 1)}, at::TensorOptions().dtype(at::kFloat));
    for (int64_t i = i0; i < i1; ++i) {
      const Item& it = items[static_cast<size_t>(i)];
      run_item_any(plans[static_cast<size_t>(it.plan)], it, alpha, tile);
    }
  });
}

// The checks and layout handling shared by rank1_apply and rank1_apply_many: validates one weight,
// bumps its version, and appends its row-major form (w2, a, b) to the lists; a weight with no unit
// stride is worked on as a compact copy, returned in `copies` to be written back afterwards.
void prepare(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v, bool transposed,
             std::vector<at::Tensor>& w2s, std::vector<at::Tensor>& as, std::vector<at::Tensor>& bs,
             std::vector<std::pair<at::Tensor, at::Tensor>>& copies) {
  check_inputs(weight, u, v, transposed);
  rank1::check_no_alias(weight, u, v);
  if (u.size(1) == 0 || weight.numel() == 0) return;  // no terms, or nothing to update
  // A schema returning () gets no version bump from the autograd fallbacks (they bump returned
  // aliases only), so do what torch.autograd.graph.increment_version does: saved-tensor checks then
  // see the write. Raises for an inference tensor outside inference mode, as built-in ops do.
  weight.unsafeGetTensorImpl()->bump_version();
  // Stored layout W (R, C): the update is a @ b^T with a for the rows and b for the columns.
  const at::Tensor& a = transposed ? v : u;
  const at::Tensor& b = transposed ? u : v;
  if (weight.stride(1) == 1 || weight.size(1) == 1) {
    w2s.push_back(weight);  // contiguous, or a row/column slice of a bigger matrix
    as.push_back(a);
    bs.push_back(b);
  } else if (weight.stride(0) == 1 || weight.size(0) == 1) {
    w2s.push_back(weight.t());  // a transposed view: update W^T += b a^T instead
    as.push_back(b);
    bs.push_back(a);
  } else {
    // Arbitrary strides (e.g. w[::2, ::3]): work on a compact copy in the weight's own dtype and
    // write it back, so the caller's storage is what changes. Rare; costs one weight-sized copy.
    at::Tensor compact = weight.contiguous();
    copies.emplace_back(weight, compact);
    w2s.push_back(compact);
    as.push_back(a);
    bs.push_back(b);
  }
}

void finish(const std::vector<std::pair<at::Tensor, at::Tensor>>& copies) {
  for (const auto& [weight, compact] : copies) weight.copy_(compact);
}

void rank1_apply_cpu(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v, bool transposed,
                     double alpha) {
  std::vector<at::Tensor> w2s, as, bs;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  prepare(weight, u, v, transposed, w2s, as, bs, copies);
  apply_many(w2s, as, bs, alpha);  // one weight: bitwise what rank1_apply_many gives for it
  finish(copies);
}

void rank1_apply_many_cpu(at::TensorList weights, const at::Tensor& us, const at::Tensor& vs, bool transposed,
                          double alpha) {
  const auto L = static_cast<int64_t>(weights.size());
  rank1::check_stacked(L, us, vs);
  // Every weight is checked before any is written: a bad layer leaves the model untouched.
  for (int64_t i = 0; i < L; ++i) check_inputs(weights[i], us[i], vs[i], transposed);
  // Two layers sharing storage (a weight listed twice, tied weights) would be updated by two threads
  // at once; such callers apply them in two calls instead.
  rank1::check_disjoint(weights);
  std::vector<at::Tensor> w2s, as, bs;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  for (int64_t i = 0; i < L; ++i) prepare(weights[i], us[i], vs[i], transposed, w2s, as, bs, copies);
  apply_many(w2s, as, bs, alpha);
  finish(copies);
}

}  // namespace
}  // namespace golden_fast

// A fragment, not TORCH_LIBRARY: every csrc/<op>.cpp adds its own op to the golden_fast namespace
// without one file having to own it (two TORCH_LIBRARY blocks for one namespace fail at load).
TORCH_LIBRARY_FRAGMENT(golden_fast, m) {
  // Fake (meta) kernel: golden_fast/ops/rank1.py registers it; torch imports that module on demand.
  m.set_python_module("golden_fast.ops.rank1");
  m.def("rank1_apply(Tensor(a!) weight, Tensor u, Tensor v, bool transposed=False, float alpha=1.0) -> ()");
  m.def(
      "rank1_apply_many(Tensor(a!)[] weights, Tensor us, Tensor vs, bool transposed=False, float alpha=1.0) "
      "-> ()");
}

TORCH_LIBRARY_IMPL(golden_fast, CPU, m) {
  m.impl("rank1_apply", &golden_fast::rank1_apply_cpu);
  m.impl("rank1_apply_many", &golden_fast::rank1_apply_many_cpu);
}

// Editing is never differentiated. This autograd kernel refuses in-place on a leaf that requires
// grad (as add_ does) and marks outputs as not differentiable; without it the default fallback lets
// the write through silently.
TORCH_LIBRARY_IMPL(golden_fast, Autograd, m) {
  m.impl("rank1_apply", torch::autograd::autogradNotImplementedFallback());
  m.impl("rank1_apply_many", torch::autograd::autogradNotImplementedFallback());
}
