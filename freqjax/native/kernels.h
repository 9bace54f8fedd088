// Shared by the native kernels (conv_kernels.cc, norm_kernels.cc), compiled into one library:
// the 16-float vector type, unaligned loads and stores, and work splitting over XLA's intra-op
// thread pool. Vectors are GCC/Clang vector extensions, so one source compiles to AVX-512, AVX2
// or NEON code for whatever -march the build chose.

#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace freqjax {

namespace ffi = xla::ffi;

constexpr int kLanes = 16;
typedef float Vec __attribute__((vector_size(64)));
typedef float VecU __attribute__((vector_size(64), aligned(4)));  // unaligned access

inline Vec Load(const float* p) { return *reinterpret_cast<const VecU*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<VecU*>(p) = v; }

// Runs fn(0) ... fn(tasks - 1) on the calling thread and up to threads - 1 pool workers.
inline void ParallelFor(ffi::ThreadPool& pool, int64_t tasks, const std::function<void(int64_t)>& fn) {
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

// out[k] = sum over chunks of partial[chunk * size + k], in chunk order, split over the pool.
inline void SumChunks(ffi::ThreadPool& pool, const float* partial, int64_t chunks, int64_t size, float* out) {
  constexpr int64_t kBlock = 4096;
  ParallelFor(pool, (size + kBlock - 1) / kBlock, [&](int64_t b) {
    const int64_t k0 = b * kBlock, k1 = std::min(size, k0 + kBlock);
    std::memcpy(out + k0, partial + k0, sizeof(float) * (k1 - k0));
    for (int64_t c = 1; c < chunks; ++c)
      for (int64_t k = k0; k < k1; ++k) out[k] += partial[c * size + k];
  });
}

}  // namespace freqjax
