// rank1_apply / rank1_apply_many on CUDA: weight += alpha * (sum of n rank-one terms), in place.
//
// The contract lives in golden_fast/ops/rank1.py (csrc/rank1.cpp is the CPU twin): per element the n
// products are summed in float32 and the sum meets the weight once, w = W(float(w) + alpha * s),
// rounded to the weight's dtype once (round to nearest even), with no float32 copy of the weight.
//
// Three paths, each ending in the same add-and-round:
// - n <= kDirectMaxN: one thread per element, the n terms streamed from u (broadcast within a row)
//   and vᵀ (coalesced along the row); memory-bound on the weight, as an update of few terms must be.
// - n <= kBlasMinN: a SIMT GEMM tile (64 x 64 outputs per block of 256 threads, 4 x 4 per thread,
//   k-steps of 16 through shared memory) whose epilogue adds into the weight: one pass over it.
// - larger n: cuBLAS SGEMM into a bounded float32 block of rows, then a fused add kernel.
// Never tensor cores: TF32 would keep 10 mantissa bits of u and v, and float32 is the contract (the
// cuBLAS path is skipped when the user has allowed TF32 globally). float64 weights use the first two
// paths in float64. The final add is a rounded multiply then a rounded add, never a fused multiply-add,
// so it rounds exactly like the CPU kernels (built with -ffp-contract=off); only the order of the
// n-term sums may differ.
// rank1_apply_many launches one kernel per weight on the current stream (no host synchronisation).

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../rank1.h"

namespace golden_fast {
namespace {

constexpr int64_t kDirectMaxN = 16;
// Beyond this many terms the update is a real GEMM: cuBLAS computes the float32 sums of a bounded
// block of rows and a fused kernel adds them into the weight (as the CPU kernel does with its tiles).
// Below it, the SIMT tile kernel with the add as its epilogue reads the weight once. Measured: the
// SIMT kernel beats the reference at small n but falls behind cuBLAS at large n (figures:
// bench/README.md, "Op-level measurements quoted from the ops' design notes").
constexpr int64_t kBlasMinN = 256;
// float32 sums held at a time by the cuBLAS path (64 MiB): bounded, whatever the weight.
constexpr int64_t kBlasTileElems = int64_t{16} << 20;
constexpr int kThreads = 256;
constexpr int kBM = 64, kBN = 64, kBK = 16, kTM = 4, kTN = 4;  // (kBM / kTM) * (kBN / kTN) == kThreads
static_assert((kBM / kTM) * (kBN / kTN) == kThreads, "one thread per 4 x 4 outputs");

// One rounding into W, after exactly the operations of the CPU kernels: alpha * s rounded, then added
// (no fused multiply-add). Acc is float (16-bit and float32 weights) or double (float64 weights).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

template <typename W, typename Acc>
__device__ __forceinline__ void add_round(W* w, Acc alpha, Acc s) {
  *w = static_cast<W>(add_rn(static_cast<Acc>(*w), mul_rn(alpha, s)));
}

// W (rows, cols), row stride ldw += alpha * a (rows, n) @ bt (n, cols); a, bt contiguous, type Acc.
template <typename W, typename Acc>
__global__ void rank1_direct_kernel(W* __restrict__ w, int64_t rows, int64_t cols, int64_t ldw,
                                    const Acc* __restrict__ a, const Acc* __restrict__ bt, int64_t n, Acc alpha) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    Acc s = 0;
    for (int64_t j = 0; j < n; ++j) s += a[r * n + j] * bt[j * cols + c];
    add_round(w + r * ldw + c, alpha, s);
  }
}

// W (rows, cols) += alpha * sums (rows, cols), float32 sums from cuBLAS, contiguous.
template <typename W>
__global__ void rank1_add_kernel(W* __restrict__ w, int64_t rows, int64_t cols, int64_t ldw,
                                 const float* __restrict__ sums, float alpha) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) add_round(w + r * ldw + c, alpha, sums[r * cols + c]);
}

// Same update for moderate n: at (n, rows) and bt (n, cols) contiguous (u and v transposed, so both
// shared-memory tiles load along their contiguous dimension).
template <typename W, typename Acc>
__global__ void __launch_bounds__(kThreads) rank1_tiled_kernel(W* __restrict__ w, int64_t rows, int64_t cols,
                                                                int64_t ldw, const Acc* __restrict__ at,
                                                                const Acc* __restrict__ bt, int64_t n, Acc alpha) {
  __shared__ Acc As[kBK][kBM];
  __shared__ Acc Bs[kBK][kBN];
  const int tid = threadIdx.x;
  const int tx = tid % (kBN / kTN), ty = tid / (kBN / kTN);
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kBM, c0 = static_cast<int64_t>(blockIdx.x) * kBN;
  Acc acc[kTM][kTN] = {};
  for (int64_t k0 = 0; k0 < n; k0 += kBK) {
    for (int i = tid; i < kBK * kBM; i += kThreads) {  // coalesced along rows / columns
      const int k = i / kBM, x = i % kBM;
      const bool in_k = k0 + k < n;
      As[k][x] = (in_k && r0 + x < rows) ? at[(k0 + k) * rows + r0 + x] : Acc(0);
      Bs[k][x] = (in_k && c0 + x < cols) ? bt[(k0 + k) * cols + c0 + x] : Acc(0);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      Acc ar[kTM], br[kTN];
#pragma unroll
      for (int i = 0; i < kTM; ++i) ar[i] = As[k][ty * kTM + i];
#pragma unroll
      for (int j = 0; j < kTN; ++j) br[j] = Bs[k][tx * kTN + j];
#pragma unroll
      for (int i = 0; i < kTM; ++i) {
#pragma unroll
        for (int j = 0; j < kTN; ++j) acc[i][j] += ar[i] * br[j];
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int64_t r = r0 + ty * kTM + i;
    if (r >= rows) continue;
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t c = c0 + tx * kTN + j;
      if (c < cols) add_round(w + r * ldw + c, alpha, acc[i][j]);
    }
  }
}

dim3 row_grid(int64_t rows, int64_t cols) {
  return dim3(static_cast<unsigned>((cols + kThreads - 1) / kThreads),
              static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
}

template <typename W, typename Acc>
void launch(const at::Tensor& w2, const at::Tensor& a, const at::Tensor& b, double alpha) {
  const int64_t rows = w2.size(0), cols = w2.size(1), n = a.size(1);
  const int64_t ldw = rows > 1 ? w2.stride(0) : cols;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  W* w = reinterpret_cast<W*>(w2.data_ptr());
  constexpr auto acc_type = std::is_same_v<Acc, double> ? at::kDouble : at::kFloat;
  // cuBLAS only where it keeps float32: TF32 (allowed by the user globally) would round u and v to
  // 10 mantissa bits, which the contract rules out.
  if (std::is_same_v<Acc, float> && n > kBlasMinN && !at::globalContext().allowTF32CuBLAS()) {
    const at::Tensor af = a.to(at::kFloat);                        // (rows, n), any strides
    const at::Tensor bt = b.to(at::kFloat).t();                    // (n, cols) view
    const int64_t chunk = std::clamp<int64_t>(kBlasTileElems / std::max<int64_t>(cols, 1), 1, rows);
    at::Tensor sums = at::empty({chunk, cols}, af.options());     // bounded float32 scratch
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t len = std::min(chunk, rows - r0);
      at::Tensor t = sums.narrow(0, 0, len);
      at::mm_out(t, af.narrow(0, r0, len), bt);
      rank1_add_kernel<W><<<row_grid(len, cols), kThreads, 0, stream>>>(
          w + r0 * ldw, len, cols, ldw, t.const_data_ptr<float>(), static_cast<float>(alpha));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return;
  }
  const at::Tensor bt = b.to(acc_type).t().contiguous();  // (n, cols)
  if (n <= kDirectMaxN) {
    const at::Tensor ac = a.to(acc_type).contiguous();  // (rows, n)
    rank1_direct_kernel<W, Acc><<<row_grid(rows, cols), kThreads, 0, stream>>>(
        w, rows, cols, ldw, ac.const_data_ptr<Acc>(), bt.const_data_ptr<Acc>(), n, static_cast<Acc>(alpha));
  } else {
    const at::Tensor at_ = a.to(acc_type).t().contiguous();  // (n, rows)
    if ((rows + kBM - 1) / kBM > 65535) {
      TORCH_CHECK(false, "rank1_apply (CUDA): too many rows: " + std::to_string(rows));
    }
    const dim3 grid(static_cast<unsigned>((cols + kBN - 1) / kBN), static_cast<unsigned>((rows + kBM - 1) / kBM));
    rank1_tiled_kernel<W, Acc><<<grid, kThreads, 0, stream>>>(
        w, rows, cols, ldw, at_.const_data_ptr<Acc>(), bt.const_data_ptr<Acc>(), n, static_cast<Acc>(alpha));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// weight (R, C) with unit column stride += alpha * a (R, n) @ b (C, n)^T.
void apply_rowmajor(const at::Tensor& w2, const at::Tensor& a, const at::Tensor& b, double alpha) {
  switch (w2.scalar_type()) {
    case at::kHalf: return launch<c10::Half, float>(w2, a, b, alpha);
    case at::kBFloat16: return launch<c10::BFloat16, float>(w2, a, b, alpha);
    case at::kFloat: return launch<float, float>(w2, a, b, alpha);
    case at::kDouble: return launch<double, double>(w2, a, b, alpha);  // the accuracy option: float64 sums
    default:
      TORCH_CHECK_VALUE(false, std::string("rank1_apply: unsupported weight dtype ") + c10::toString(w2.scalar_type()));
  }
}

void apply_one(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v, bool transposed, double alpha) {
  if (u.size(1) == 0 || weight.numel() == 0) return;
  weight.unsafeGetTensorImpl()->bump_version();  // see csrc/rank1.cpp: the () schema gets no bump
  const at::Tensor& a = transposed ? v : u;
  const at::Tensor& b = transposed ? u : v;
  if (weight.stride(1) == 1 || weight.size(1) == 1) {
    apply_rowmajor(weight, a, b, alpha);
  } else if (weight.stride(0) == 1 || weight.size(0) == 1) {
    apply_rowmajor(weight.t(), b, a, alpha);
  } else {  // arbitrary strides: a compact copy in the weight's dtype, written back
    at::Tensor compact = weight.contiguous();
    apply_rowmajor(compact, a, b, alpha);
    weight.copy_(compact);
  }
}

void check_cuda(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v, bool transposed) {
  rank1::check_inputs(weight, u, v, transposed, c10::DeviceType::CUDA, "CUDA");
  rank1::check_no_alias(weight, u, v);
}

void rank1_apply_cuda(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v, bool transposed,
                      double alpha) {
  check_cuda(weight, u, v, transposed);
  const c10::cuda::CUDAGuard guard(weight.device());
  apply_one(weight, u, v, transposed, alpha);
}

void rank1_apply_many_cuda(at::TensorList weights, const at::Tensor& us, const at::Tensor& vs, bool transposed,
                           double alpha) {
  const auto L = static_cast<int64_t>(weights.size());
  rank1::check_stacked(L, us, vs);
  for (int64_t i = 0; i < L; ++i) check_cuda(weights[i], us[i], vs[i], transposed);  // all before any write
  rank1::check_disjoint(weights);
  if (L == 0) return;
  const c10::cuda::CUDAGuard guard(weights[0].device());
  for (int64_t i = 0; i < L; ++i) apply_one(weights[i], us[i], vs[i], transposed, alpha);
}

}  // namespace
}  // namespace golden_fast

// The schemas are defined in csrc/rank1.cpp (TORCH_LIBRARY_FRAGMENT); this adds the CUDA kernels.
TORCH_LIBRARY_IMPL(golden_fast, CUDA, m) {
  m.impl("rank1_apply", &golden_fast::rank1_apply_cuda);
  m.impl("rank1_apply_many", &golden_fast::rank1_apply_many_cuda);
}
