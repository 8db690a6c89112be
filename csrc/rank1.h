// Checks shared by the CPU (csrc/rank1.cpp) and CUDA (csrc/cuda/rank1.cu) kernels of rank1_apply and
// rank1_apply_many: the same messages as the Python fake kernel in golden_fast/ops/rank1.py, so every
// backend rejects bad input with the same ValueError. Header-only; no CUDA in here.

#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <cstdint>
#include <string>
#include <utility>

namespace golden_fast::rank1 {

// Messages are built with std::string and std::to_string and handed to TORCH_CHECK as ONE string,
// which c10 passes through without an ostream (c10::str's single-string case). No iostream code is
// instantiated in this extension: on the GPU machine of 2026-11, an extension built by a newer GCC
// than the libstdc++ loaded at run time crashed inside std::ostream << long.
inline std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(t.size(i));
  }
  return s + "]";
}

// Shapes and dtypes of one (weight, u, v), and that all three are on `device_type` (kernel: its name).
inline void check_inputs(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v, bool transposed,
                         c10::DeviceType device_type, const char* kernel) {
  // The shapes are formatted only when a check fails: this runs on every call.
  const auto shapes = [&] {
    return "weight " + shape_str(weight) + ", u " + shape_str(u) + ", v " + shape_str(v) +
           " (transposed=" + (transposed ? "True" : "False") + ")";
  };
  if (!(weight.dim() == 2 && u.dim() == 2 && v.dim() == 2)) {
    TORCH_CHECK_VALUE(false, "rank1_apply: weight, u and v must be 2-D; got " + shapes());
  }
  const int64_t d = u.size(0), m = v.size(0);
  if (u.size(1) != v.size(1)) {
    TORCH_CHECK_VALUE(false, "rank1_apply: u (d, n) and v (m, n) need the same n; got " + shapes());
  }
  if (transposed && !(weight.size(0) == m && weight.size(1) == d)) {
    TORCH_CHECK_VALUE(false,
                      "rank1_apply: a transposed weight is (m, d) for u (d, n), v (m, n); got " + shapes());
  }
  if (!transposed && !(weight.size(0) == d && weight.size(1) == m)) {
    TORCH_CHECK_VALUE(false, "rank1_apply: weight is (d, m) for u (d, n), v (m, n); got " + shapes());
  }
  const auto wt = weight.scalar_type();
  if (!(wt == at::kFloat || wt == at::kHalf || wt == at::kBFloat16 || wt == at::kDouble)) {
    TORCH_CHECK_VALUE(false, std::string("rank1_apply: weight must be float32, float16, bfloat16 or float64; ") +
                                 "got " + c10::toString(wt));
  }
  if (!(u.is_floating_point() && v.is_floating_point())) {
    TORCH_CHECK_VALUE(false, std::string("rank1_apply: u and v must be floating point; got ") +
                                 c10::toString(u.scalar_type()) + " and " + c10::toString(v.scalar_type()));
  }
  if (!(weight.device().type() == device_type && u.device() == weight.device() && v.device() == weight.device())) {
    TORCH_CHECK(false, std::string("rank1_apply (") + kernel + " kernel): all tensors must be on one " +
                           c10::DeviceTypeName(device_type, /*lower_case=*/true) + " device; got weight on " +
                           weight.device().str() + ", u on " + u.device().str() + ", v on " + v.device().str());
  }
}

// rank1_apply_many's stacked factors: us (L, d, n), vs (L, m, n) for L weights.
inline void check_stacked(int64_t L, const at::Tensor& us, const at::Tensor& vs) {
  if (!(us.dim() == 3 && vs.dim() == 3 && us.size(0) == L && vs.size(0) == L)) {
    TORCH_CHECK_VALUE(false, "rank1_apply_many: us must be (L, d, n) and vs (L, m, n) for L = " +
                                 std::to_string(L) + " weights; got us " + shape_str(us) + ", vs " + shape_str(vs));
  }
}

// Byte range [first, last] spanned by a tensor's elements.
inline std::pair<uintptr_t, uintptr_t> byte_span(const at::Tensor& t) {
  auto first = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  auto last = first + t.element_size() - 1;
  for (int64_t d = 0; d < t.dim(); ++d) {
    const auto step = static_cast<intptr_t>((t.size(d) - 1) * t.stride(d) * t.element_size());
    if (step < 0) {
      first += step;
    } else {
      last += step;
    }
  }
  return {first, last};
}

// Whether two weights could share an element. get_overlap_status answers exactly for contiguous
// tensors and "too hard" otherwise; then two views whose byte spans intersect count as sharing
// (conservative: interleaved views such as w[::2] and w[1::2] are refused too).
inline bool may_share_memory(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0) return false;
  const auto status = at::get_overlap_status(a, b);
  if (status == at::MemOverlapStatus::Full || status == at::MemOverlapStatus::Partial) return true;
  if (status == at::MemOverlapStatus::No) return false;
  const auto [a0, a1] = byte_span(a);
  const auto [b0, b1] = byte_span(b);
  return a0 <= b1 && b0 <= a1;
}

// Weights i < j of one rank1_apply_many call must not share memory: they are updated concurrently.
inline void check_disjoint(at::TensorList weights) {
  for (size_t i = 0; i < weights.size(); ++i) {
    for (size_t j = i + 1; j < weights.size(); ++j) {
      if (may_share_memory(weights[i], weights[j])) {
        TORCH_CHECK(false, "rank1_apply_many: weights " + std::to_string(i) + " and " + std::to_string(j) +
                               " share memory");
      }
    }
  }
}

// In place on a weight whose elements share memory (expand()) or that u/v alias is meaningless.
inline void check_no_alias(const at::Tensor& weight, const at::Tensor& u, const at::Tensor& v) {
  at::assert_no_internal_overlap(weight);
  at::assert_no_overlap(weight, u);
  at::assert_no_overlap(weight, v);
}

}  // namespace golden_fast::rank1
