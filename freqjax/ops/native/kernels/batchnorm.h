// BatchNorm's helpers: per-channel sums in one pass, and the tiled per-channel vector.
// Part of the one translation unit conv_kernels.cc (which includes every kernel family once).

#pragma once

#include "common.h"

namespace freqjax {
namespace {

// Per-channel sums for BatchNorm: out[0][c] = sum_r a[r][c], out[1][c] = sum_r a[r][c] * b[r][c]
// over all rows r (N*H*W pixels); C a multiple of 16. Forward statistics are (x, x) -> (sum x,
// sum x^2), the backward's are (dz, x) -> (sum dz, sum dz * x): one pass over the data where XLA
// runs a reduction fusion of its own per sum.

constexpr int64_t kSumChunks = 16;  // fixed row chunks: the summation order depends on shapes only
constexpr int kSumVecs = kAccumulators / 3;  // channel vectors per task: 2 accumulators each

ffi::Error ChannelSumsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                           ffi::ResultBuffer<ffi::F32> out) {
  const auto dims = a.dimensions();
  const int64_t c = dims.back(), rows = c > 0 ? a.element_count() / c : 0;
  if (c % kChannelMultiple != 0) return ffi::Error::InvalidArgument("freqjax channel sums: C must be a multiple of 16");
  const float* A = a.typed_data();
  const float* B = b.typed_data();
  const int64_t chunks = std::max<int64_t>(1, std::min(rows, kSumChunks)), vecs = c / kLanes;
  const int64_t blocks = (vecs + kSumVecs - 1) / kSumVecs;
  std::vector<float> partial(chunks * 2 * c);
  ParallelFor(pool, chunks * blocks, [&](int64_t t) {
    const int64_t chunk = t / blocks, v0 = t % blocks * kSumVecs, nv = std::min<int64_t>(kSumVecs, vecs - v0);
    const int64_t r0 = rows * chunk / chunks, r1 = rows * (chunk + 1) / chunks;
    Vec sum[kSumVecs], dot[kSumVecs];
    for (int v = 0; v < kSumVecs; ++v) sum[v] = dot[v] = Vec{};
    for (int64_t r = r0; r < r1; ++r) {
      const float* ar = A + r * c + v0 * kLanes;
      const float* br = B + r * c + v0 * kLanes;
      for (int v = 0; v < nv; ++v) {
        const Vec x = Load(ar + v * kLanes);
        sum[v] += x;
        dot[v] += x * Load(br + v * kLanes);
      }
    }
    float* p = partial.data() + chunk * 2 * c + v0 * kLanes;
    for (int v = 0; v < nv; ++v) {
      Store(p + v * kLanes, sum[v]);
      Store(p + c + v * kLanes, dot[v]);
    }
  });
  SumChunks(pool, partial.data(), chunks, 2 * c, out->typed_data());
  return ffi::Error::Success();
}

// out = `times` copies of v back to back, times = len(out) / len(v): per-channel BatchNorm vectors
// tiled to the packed (..., 32) view of 16-channel activations (freqjax/ops/native/ffi.py,
// repeat_vector). A copy XLA cannot see into, so its loop fusions read the tiled vector instead of
// recomputing it per element from the 16 floats (which the emitter compiles slowly).
ffi::Error RepeatVectorImpl(ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> out) {
  const int64_t n = v.element_count(), total = out->element_count();
  if (n == 0 || total % n != 0) return ffi::Error::InvalidArgument("freqjax repeat_vector: bad sizes");
  for (int64_t at = 0; at < total; at += n) std::copy(v.typed_data(), v.typed_data() + n, out->typed_data() + at);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace freqjax
