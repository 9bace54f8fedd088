// Depthwise convolutions: forward and weight gradient.
// Part of the one translation unit conv_kernels.cc (which includes every kernel family once).

#pragma once

#include "common.h"

namespace freqjax {
namespace {

// Depthwise: x (N, H, W, C), w (KH, KW, C), y (N, Ho, Wo, C); C a multiple of 16. Each channel
// vector is independent, so the kernels stream pixels for one vector of channels at a time.

// RB consecutive output pixels of one row for channel vector c: sum over taps [i0, i1) x [j0, j1).
template <int RB>
inline void DepthwiseBlock(const Geometry& g, const float* x_pix, const float* w, float* y, int64_t i0, int64_t i1,
                           int64_t j0, int64_t j1) {
  Vec acc[RB];
  for (int r = 0; r < RB; ++r) acc[r] = Vec{};
  const int64_t pix_step = g.sw * g.cin, row_step = g.w * g.cin;
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t j = j0; j < j1; ++j) {
      const Vec wv = Load(w + (i * g.kw + j) * g.cin);
      const float* xp = x_pix + i * row_step + j * g.cin;
      for (int r = 0; r < RB; ++r) acc[r] += Load(xp + r * pix_step) * wv;
    }
  }
  for (int r = 0; r < RB; ++r) Store(y + r * g.cin, acc[r]);
}

void DepthwiseRow(const Geometry& g, const float* x_img, const float* w, float* y_row, int64_t oh) {
  const int64_t top = oh * g.sh - g.pt;
  const Range rows = TapsInside(top, g.kh, g.h);
  const float* x_row = x_img + top * g.w * g.cin;
  const Range inner = InteriorColumns(g);
  for (int64_t c = 0; c < g.cin; c += kLanes) {
    const float* xc = x_row + c - g.pl * g.cin;  // x_row at column -pl, channel vector c
    const float* wc = w + c;
    float* yc = y_row + c;
    auto edge = [&](int64_t o) {
      const Range cols = TapsInside(o * g.sw - g.pl, g.kw, g.w);
      DepthwiseBlock<1>(g, xc + o * g.sw * g.cin, wc, yc + o * g.cin, rows.begin, rows.end, cols.begin, cols.end);
    };
    for (int64_t o = 0; o < inner.begin; ++o) edge(o);
    int64_t o = inner.begin;
    for (; o + 4 <= inner.end; o += 4)
      DepthwiseBlock<4>(g, xc + o * g.sw * g.cin, wc, yc + o * g.cin, rows.begin, rows.end, 0, g.kw);
    for (; o < inner.end; ++o)
      DepthwiseBlock<1>(g, xc + o * g.sw * g.cin, wc, yc + o * g.cin, rows.begin, rows.end, 0, g.kw);
    for (o = inner.end; o < g.wo; ++o) edge(o);
  }
}

ffi::Error DepthwiseForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                                ffi::ResultBuffer<ffi::F32> y, int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  const auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  const Geometry g{xd[0], xd[1], xd[2], xd[3], wd[0], wd[1], xd[3], yd[1], yd[2], sh, sw, pt, pl};
  if (g.cin % kChannelMultiple != 0) return ffi::Error::InvalidArgument("freqjax depthwise: C must be a multiple of 16");
  const float* X = x.typed_data();
  const float* W = w.typed_data();
  float* Y = y->typed_data();
  ParallelFor(pool, g.n * g.ho, [&](int64_t t) {
    const int64_t img = t / g.ho, oh = t % g.ho;
    DepthwiseRow(g, X + img * g.h * g.w * g.cin, W, Y + (img * g.ho + oh) * g.wo * g.cin, oh);
  });
  return ffi::Error::Success();
}

// dw[i, j, c] over images [img0, img1) for channel vector c, one tap at a time over the output
// pixels whose tap reads inside the image; four accumulators break the FMA dependency chain.
void DepthwiseWeightGradTap(const Geometry& g, const float* X, const float* DY, int64_t img0, int64_t img1, int64_t i,
                            int64_t j, int64_t c, float* out) {
  const Range ohs = OutputsInside(i - g.pt, g.sh, g.h, g.ho), ows = OutputsInside(j - g.pl, g.sw, g.w, g.wo);
  Vec acc[4] = {Vec{}, Vec{}, Vec{}, Vec{}};
  const int64_t xs = g.sw * g.cin;
  for (int64_t img = img0; img < img1; ++img) {
    for (int64_t oh = ohs.begin; oh < ohs.end; ++oh) {
      const float* dy = DY + ((img * g.ho + oh) * g.wo) * g.cin + c;
      const float* xr = X + ((img * g.h + oh * g.sh + i - g.pt) * g.w + j - g.pl) * g.cin + c;
      int64_t ow = ows.begin;
      for (; ow + 4 <= ows.end; ow += 4)
        for (int r = 0; r < 4; ++r) acc[r] += Load(xr + (ow + r) * xs) * Load(dy + (ow + r) * g.cin);
      for (; ow < ows.end; ++ow) acc[0] += Load(xr + ow * xs) * Load(dy + ow * g.cin);
    }
  }
  Store(out, (acc[0] + acc[1]) + (acc[2] + acc[3]));
}

ffi::Error DepthwiseWeightGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                   ffi::ResultBuffer<ffi::F32> dw, int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  const auto xd = x.dimensions(), dyd = dy.dimensions(), wd = dw->dimensions();
  const Geometry g{xd[0], xd[1], xd[2], xd[3], wd[0], wd[1], xd[3], dyd[1], dyd[2], sh, sw, pt, pl};
  if (g.cin % kChannelMultiple != 0) return ffi::Error::InvalidArgument("freqjax depthwise: C must be a multiple of 16");
  const float* X = x.typed_data();
  const float* DY = dy.typed_data();
  float* DW = dw->typed_data();
  const int64_t taps = g.kh * g.kw, vecs = g.cin / kLanes, size = taps * g.cin;
  // Each (chunk, channel vector) task writes its own partial (WeightGradChunks).
  const int64_t chunks = WeightGradChunks(g.n, size);
  std::vector<float> partial(chunks > 1 ? chunks * size : 0);
  float* sums = chunks > 1 ? partial.data() : DW;
  ParallelFor(pool, chunks * vecs, [&](int64_t t) {
    const int64_t chunk = t / vecs, c = (t % vecs) * kLanes;
    const int64_t img0 = g.n * chunk / chunks, img1 = g.n * (chunk + 1) / chunks;
    for (int64_t tap = 0; tap < taps; ++tap)
      DepthwiseWeightGradTap(g, X, DY, img0, img1, tap / g.kw, tap % g.kw, c,
                             sums + chunk * size + tap * g.cin + c);
  });
  if (chunks > 1) SumChunks(pool, sums, chunks, size, DW);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace freqjax
