// What every kernel family shares: the thread pool loop, conv geometry, compile-time channel
// counts and channel tiles, tap ranges, and fixed-order chunk sums for weight gradients.
// Part of the one translation unit conv_kernels.cc (which includes every kernel family once).

#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "simd.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace freqjax {
namespace {

// Runs fn(0) ... fn(tasks - 1) on the calling thread and up to threads - 1 pool workers.
void ParallelFor(ffi::ThreadPool& pool, int64_t tasks, const std::function<void(int64_t)>& fn) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  // Workers that start after the last task was claimed touch only `state`, which they own a share of.
  auto fn_ptr = &fn;
  auto worker = [state, fn_ptr, tasks]() {
    for (int64_t t; (t = state->next.fetch_add(1)) < tasks;) {
      (*fn_ptr)(t);
      state->done.fetch_add(1);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), tasks) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(std::function<void()>(worker));
  worker();
  while (state->done.load() < tasks) std::this_thread::yield();
}

struct Geometry {
  int64_t n, h, w, cin, kh, kw, cout, ho, wo, sh, sw, pt, pl;
  int64_t y_step = 0;  // floats between consecutive output pixels of a row (the forward kernels)
};

// Width of an NHWC activation with `channels` channels. A 16-channel activation may come packed as
// (N, H, W / 2, 32), pixel pairs in one row of 32 floats (the same bytes): XLA's CPU loop fusions
// whose output has 16 floats on its last axis run 2-3x slower than on 32 (freqjax.ops.native.packed),
// so the Python wrappers hand such inputs over packed. The channel counts come from the weights.
inline int64_t Width(ffi::Span<const int64_t> d, int64_t channels) { return d[2] * d[3] / channels; }

// x (N, H, W, C_in), possibly packed; w (KH, KW, C_in, C_out); output rows ho of wo pixels.
Geometry MakeGeometry(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> wd, int64_t ho, int64_t wo,
                      int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  return Geometry{xd[0], xd[1], Width(xd, wd[2]), wd[2], wd[0], wd[1], wd[3], ho, wo, sh, sw, pt, pl, wd[3]};
}

struct Range {
  int64_t begin, end;
};

// Channel counts as compile-time constants. The kernels read C_in and C_out from a Geometry; for
// the common pairs WithChannels runs the kernel body with them fixed (FixChannels, called first
// thing in each task, since a Geometry captured by reference reads from memory), and the helpers,
// inlined (FREQJAX_INLINE), then see constants: loops over channel vectors unroll and pixel
// offsets fold. Winograd's forward ran 1.38x faster so at 16 channels (1.09x at 32, 1.14x at 64),
// the quick CIFAR ResNet's train step 1.12x (benchmarks/kernel_ab.py against the build before).
// Other counts run the same code with run-time counts (0).
#define FREQJAX_INLINE inline __attribute__((always_inline))

template <int CI, int CO>
FREQJAX_INLINE Geometry FixChannels(Geometry g) {
  if constexpr (CI > 0) g.cin = CI;
  if constexpr (CO > 0) g.cout = CO;
  return g;
}

template <int N>
using Count = std::integral_constant<int, N>;

// fn(Count<C_in>{}, Count<C_out>{}) if (cin, cout) is one of the pairs (CI, CO, Rest...), else
// fn(Count<0>{}, Count<0>{}).
template <int CI, int CO, int... Rest, typename Fn>
void WithChannels(int64_t cin, int64_t cout, Fn&& fn) {
  if (cin == CI && cout == CO) return fn(Count<CI>{}, Count<CO>{});
  if constexpr (sizeof...(Rest) > 0) {
    WithChannels<Rest...>(cin, cout, fn);
  } else {
    fn(Count<0>{}, Count<0>{});
  }
}

// fn(Count<CB>{}, c) for each tile of CB output-channel vectors at channel c, over [c, cout): tiles
// of kMaxTileVecs vectors, then halves (on AVX-512 4, 2, 1: 7 vectors are 4 + 2 + 1).
template <int CB = kMaxTileVecs, typename Fn>
FREQJAX_INLINE void ForChannelTiles(int64_t c, int64_t cout, const Fn& fn) {
  for (; (cout - c) / kLanes >= CB; c += CB * kLanes) fn(Count<CB>{}, c);
  if constexpr (CB > 1) ForChannelTiles<CB / 2>(c, cout, fn);
}

// The (C_in, C_out) pairs fixed, from the CIFAR ResNets' stages: Winograd's stride-1 convs; the
// direct kernel's RGB stem and stride-2 convs into the next stage, and those convs' input
// gradients (the forward kernel from C_out to C_in). Each pair compiles the kernel once more.
#define FREQJAX_WINOGRAD_PAIRS 16, 16, 32, 32, 64, 64
#define FREQJAX_DIRECT_PAIRS 3, 16, 16, 32, 32, 64, 32, 16, 64, 32

// Taps [begin, end) of a kernel of `taps` that read inside an axis of `size` when tap 0 reads `start`.
inline Range TapsInside(int64_t start, int64_t taps, int64_t size) {
  return {std::max<int64_t>(0, -start), std::min<int64_t>(taps, size - start)};
}

// Output pixels [begin, end) of `outs` whose tap at offset `off` (output o reads o * stride + off)
// reads inside an axis of `size`.
inline Range OutputsInside(int64_t off, int64_t stride, int64_t size, int64_t outs) {
  const int64_t begin = off >= 0 ? 0 : (-off + stride - 1) / stride;
  const int64_t end = size - off <= 0 ? 0 : (size - off + stride - 1) / stride;
  return {begin, std::min(end, outs)};
}

// Output columns [begin, end) whose taps all read inside the row (the interior, no edge checks).
inline Range InteriorColumns(const Geometry& g) {
  int64_t begin = 0;
  while (begin < g.wo && begin * g.sw - g.pl < 0) ++begin;
  int64_t end = g.wo;
  while (end > begin && (end - 1) * g.sw - g.pl + g.kw > g.w) --end;
  return {begin, end};
}

// Fixed batch chunks for weight gradients: a function of the shapes only, so the partial sums and
// their order (hence the result) do not depend on how threads split the work; at most 8 chunks
// and 32 MiB of partials.
inline int64_t WeightGradChunks(int64_t n, int64_t size) {
  const int64_t budget = int64_t{32} << 20;
  return std::max<int64_t>(1, std::min<int64_t>({n, 8, budget / std::max<int64_t>(1, size * 4)}));
}

// out[k] = sum over chunks of partial[chunk * size + k], in chunk order, split over the pool.
void SumChunks(ffi::ThreadPool& pool, const float* partial, int64_t chunks, int64_t size, float* out) {
  constexpr int64_t kBlock = 4096;
  ParallelFor(pool, (size + kBlock - 1) / kBlock, [&](int64_t b) {
    const int64_t k0 = b * kBlock, k1 = std::min(size, k0 + kBlock);
    std::memcpy(out + k0, partial + k0, sizeof(float) * (k1 - k0));
    for (int64_t c = 1; c < chunks; ++c)
      for (int64_t k = k0; k < k1; ++k) out[k] += partial[c * size + k];
  });
}

}  // namespace
}  // namespace freqjax
