// BatchNorm's kernels for NHWC float32 (C a multiple of 16), called through the XLA FFI:
//
// - per-channel sums: (a, b) -> (sum a, sum a * b) over all pixels (the statistics, sum x and
//   sum x^2, and the backward's sum dz and sum dz * x), and the same with dz = g * act'(y) formed
//   on the fly from the output gradient g and the layer's output y;
// - the normalisation with its activation: y = act(x * a + b [+ r]) with per-channel a and b
//   (the batch statistics, scale and bias folded) and an optional residual r;
// - its input gradient: dx = a * dz + c0 + c1 * x with per-channel c0, c1 (the batch statistics'
//   part of the gradient, from the sums above), optionally also writing dz (the residual's gradient).
//
// XLA's CPU backend runs these as loop fusions, and at 16 channels (one vector per pixel) its
// per-channel broadcasts ran 2-3x slower than the same pass at 32 or more channels (README,
// Benchmarks); here every pass runs at the rate of the memory. act is the identity or ReLU
// (act'(y) = y > 0, read from the output, so the backward needs no recomputation). Sums use
// fixed row chunks, so results do not depend on how threads split the work.

#include "kernels.h"

namespace {

using namespace freqjax;  // NOLINT: the shared vector type and helpers

inline Vec Relu(Vec v) {
  const Vec zero = Vec{};
  return v > zero ? v : zero;
}

// g where the ReLU passed its input (y > 0), else 0.
inline Vec ReluGrad(Vec g, Vec y) {
  const Vec zero = Vec{};
  return y > zero ? g : zero;
}

constexpr int64_t kSumChunks = 16;  // fixed row chunks: the summation order depends on shapes only
constexpr int kSumVecs = 8;         // channel vectors per task: 16 accumulators in registers

// out[0][c] = sum_r a[r][c], out[1][c] = sum_r a[r][c] * b[r][c] over all rows r (N*H*W pixels),
// where a is `a` itself or, kMasked, a * (y > 0) (the gradient through a ReLU whose output is y).
template <bool kMasked>
ffi::Error SumsImpl(ffi::ThreadPool& pool, const float* A, const float* Y, const float* B, int64_t rows, int64_t c,
                    float* out) {
  const int64_t chunks = std::max<int64_t>(1, std::min(rows, kSumChunks)), vecs = c / kLanes;
  const int64_t blocks = (vecs + kSumVecs - 1) / kSumVecs;
  std::vector<float> partial(chunks * 2 * c);
  ParallelFor(pool, chunks * blocks, [&](int64_t t) {
    const int64_t chunk = t / blocks, v0 = t % blocks * kSumVecs, nv = std::min<int64_t>(kSumVecs, vecs - v0);
    const int64_t r0 = rows * chunk / chunks, r1 = rows * (chunk + 1) / chunks;
    Vec sum[kSumVecs], dot[kSumVecs];
    for (int v = 0; v < kSumVecs; ++v) sum[v] = dot[v] = Vec{};
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t at = r * c + v0 * kLanes;
      for (int v = 0; v < nv; ++v) {
        Vec a = Load(A + at + v * kLanes);
        if constexpr (kMasked) a = ReluGrad(a, Load(Y + at + v * kLanes));
        sum[v] += a;
        dot[v] += a * Load(B + at + v * kLanes);
      }
    }
    float* p = partial.data() + chunk * 2 * c + v0 * kLanes;
    for (int v = 0; v < nv; ++v) {
      Store(p + v * kLanes, sum[v]);
      Store(p + c + v * kLanes, dot[v]);
    }
  });
  SumChunks(pool, partial.data(), chunks, 2 * c, out);
  return ffi::Error::Success();
}

// Channels (last axis) and rows (all other axes) of a buffer; rows = 0 for an empty one.
template <typename Buffer>
std::pair<int64_t, int64_t> RowsAndChannels(const Buffer& x) {
  const auto dims = x.dimensions();
  const int64_t c = dims.back();
  return {c > 0 ? x.element_count() / c : 0, c};
}

ffi::Error ChannelSumsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                           ffi::ResultBuffer<ffi::F32> out) {
  const auto [rows, c] = RowsAndChannels(a);
  if (c % kLanes != 0) return ffi::Error::InvalidArgument("freqjax channel sums: C must be a multiple of 16");
  return SumsImpl<false>(pool, a.typed_data(), nullptr, b.typed_data(), rows, c, out->typed_data());
}

// (sum dz, sum dz * x) with dz = g * act'(y): the backward sums of y = act(x * a + b [+ r]).
ffi::Error ActGradSumsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> y,
                           ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> out, int64_t relu) {
  const auto [rows, c] = RowsAndChannels(g);
  if (c % kLanes != 0) return ffi::Error::InvalidArgument("freqjax act grad sums: C must be a multiple of 16");
  if (relu) return SumsImpl<true>(pool, g.typed_data(), y.typed_data(), x.typed_data(), rows, c, out->typed_data());
  return SumsImpl<false>(pool, g.typed_data(), nullptr, x.typed_data(), rows, c, out->typed_data());
}

// Runs body(r0, r1, v0, nv) over tasks of about 16K floats: rows [r0, r1) x channel vectors
// [v0, v0 + nv), nv <= kSumVecs, so that a task keeps its per-channel coefficients in registers.
template <typename Body>
void ForRowBlocks(ffi::ThreadPool& pool, int64_t rows, int64_t c, const Body& body) {
  const int64_t vecs = c / kLanes, blocks = (vecs + kSumVecs - 1) / kSumVecs;
  const int64_t block_rows = std::max<int64_t>(1, (int64_t{1} << 14) / std::min<int64_t>(c, kSumVecs * kLanes));
  const int64_t row_tasks = (rows + block_rows - 1) / block_rows;
  ParallelFor(pool, row_tasks * blocks, [&](int64_t t) {
    const int64_t r0 = t / blocks * block_rows, v0 = t % blocks * kSumVecs;
    body(r0, std::min(rows, r0 + block_rows), v0, std::min<int64_t>(kSumVecs, vecs - v0));
  });
}

// y = act(x * a + b [+ r]).
template <bool kResidual>
ffi::Error ScaleShiftActImpl(ffi::ThreadPool& pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> a,
                             ffi::Buffer<ffi::F32> b, const float* R, ffi::ResultBuffer<ffi::F32> y, int64_t relu) {
  const auto [rows, c] = RowsAndChannels(x);
  if (c % kLanes != 0) return ffi::Error::InvalidArgument("freqjax scale-shift: C must be a multiple of 16");
  const float *X = x.typed_data(), *A = a.typed_data(), *B = b.typed_data();
  float* Y = y->typed_data();
  ForRowBlocks(pool, rows, c, [&](int64_t r0, int64_t r1, int64_t v0, int64_t nv) {
    Vec av[kSumVecs], bv[kSumVecs];
    for (int v = 0; v < nv; ++v) {
      av[v] = Load(A + (v0 + v) * kLanes);
      bv[v] = Load(B + (v0 + v) * kLanes);
    }
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t at = r * c + v0 * kLanes;
      for (int v = 0; v < nv; ++v) {
        Vec out = Load(X + at + v * kLanes) * av[v] + bv[v];
        if constexpr (kResidual) out += Load(R + at + v * kLanes);
        Store(Y + at + v * kLanes, relu ? Relu(out) : out);
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error ScaleShiftAct(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> a,
                         ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<ffi::F32> y, int64_t relu) {
  return ScaleShiftActImpl<false>(pool, x, a, b, nullptr, y, relu);
}

ffi::Error ScaleShiftAddAct(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> a,
                            ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> r, ffi::ResultBuffer<ffi::F32> y,
                            int64_t relu) {
  return ScaleShiftActImpl<true>(pool, x, a, b, r.typed_data(), y, relu);
}

// dx = a * dz + c0 + c1 * x with dz = g * act'(y) and coef = (a, c0, c1), each (C,); kWriteDz
// also stores dz (the gradient of a residual added before the activation).
template <bool kWriteDz>
ffi::Error InputGradImpl(ffi::ThreadPool& pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> y,
                         ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> coef, ffi::ResultBuffer<ffi::F32> dx,
                         float* DZ, int64_t relu) {
  const auto [rows, c] = RowsAndChannels(x);
  if (c % kLanes != 0) return ffi::Error::InvalidArgument("freqjax BatchNorm input grad: C must be a multiple of 16");
  const float *G = g.typed_data(), *Y = y.typed_data(), *X = x.typed_data(), *K = coef.typed_data();
  float* DX = dx->typed_data();
  ForRowBlocks(pool, rows, c, [&](int64_t r0, int64_t r1, int64_t v0, int64_t nv) {
    Vec av[kSumVecs], c0[kSumVecs], c1[kSumVecs];
    for (int v = 0; v < nv; ++v) {
      av[v] = Load(K + (v0 + v) * kLanes);
      c0[v] = Load(K + c + (v0 + v) * kLanes);
      c1[v] = Load(K + 2 * c + (v0 + v) * kLanes);
    }
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t at = r * c + v0 * kLanes;
      for (int v = 0; v < nv; ++v) {
        Vec dz = Load(G + at + v * kLanes);
        if (relu) dz = ReluGrad(dz, Load(Y + at + v * kLanes));
        if constexpr (kWriteDz) Store(DZ + at + v * kLanes, dz);
        Store(DX + at + v * kLanes, av[v] * dz + c0[v] + c1[v] * Load(X + at + v * kLanes));
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error InputGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> x,
                     ffi::Buffer<ffi::F32> coef, ffi::ResultBuffer<ffi::F32> dx, int64_t relu) {
  return InputGradImpl<false>(pool, g, y, x, coef, dx, nullptr, relu);
}

ffi::Error InputGradAndDz(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> y,
                          ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> coef, ffi::ResultBuffer<ffi::F32> dx,
                          ffi::ResultBuffer<ffi::F32> dz, int64_t relu) {
  return InputGradImpl<true>(pool, g, y, x, coef, dx, dz->typed_data(), relu);
}

}  // namespace

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxChannelSums, ChannelSumsImpl,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Ret<F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxActGradSums, ActGradSumsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxScaleShiftAct, ScaleShiftAct,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxScaleShiftAddAct, ScaleShiftAddAct,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxNormInputGrad, InputGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxNormInputGradAndDz, InputGradAndDz,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("relu"));
