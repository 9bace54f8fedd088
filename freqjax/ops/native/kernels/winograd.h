// Winograd kernels of stride-1 3x3 dense convs: F(4x4, 3x3) and F(2x2, 3x3) forward, F(3x3, 2x2)
// weight gradient.
// Part of the one translation unit conv_kernels.cc (which includes every kernel family once).

#pragma once

#include "common.h"

namespace freqjax {
namespace {

// 2016): each 2x2 output tile is A^T [sum_ci (G g G^T)[ci] * (B^T d B)[ci]] A over its 4x4 input
// patch d, 16 products per input-output channel pair instead of the direct conv's 36, at the cost
// of adds for the transforms. The transforms' coefficients are 0, +-1 and +-1/2, so the rounding
// error stays at float32's level (tests: relative error <= 1e-5 against XLA).

constexpr int kWinoTiles = 16;  // tiles per block: their transformed inputs stay in L1/L2 scratch

// Scratch floats between two transform points' rows of `tiles` x `channels`: padded by a cache line,
// since at power-of-two strides the 16 rows would all fall in the same few L1 sets.
inline int64_t PointStride(int tiles, int64_t channels) { return tiles * channels + kLineFloats; }

// Calls body(t, tile_row, tile_col) for tiles t0 .. t0 + tiles - 1 of an image's tile grid of
// `tile_cols` columns, in order, with one division for the first tile instead of one per tile (at
// 16 channels a tile's transform is a few dozen vector instructions, so per-tile integer work shows).
template <typename Body>
FREQJAX_INLINE void ForTiles(int64_t tile_cols, int64_t t0, int tiles, const Body& body) {
  int64_t row = t0 / tile_cols, col = t0 % tile_cols;
  for (int t = 0; t < tiles; ++t) {
    body(t, row, col);
    if (++col == tile_cols) {
      col = 0;
      ++row;
    }
  }
}

// Pixel pointers (channel 0) of the 4x4 patch at (top, left), `zeros` (a row of zeros as long as a
// pixel) where the patch leaves the image: the transforms then load without branches, which keeps
// the patch in registers. A patch wholly inside the image (most of them) takes fixed offsets from
// its first pixel instead of a bounds check per pixel.
FREQJAX_INLINE void PatchPointers(const Geometry& g, const float* x_img, int64_t top, int64_t left, const float* zeros,
                                  const float* ptr[4][4]) {
  if (top >= 0 && top + 4 <= g.h && left >= 0 && left + 4 <= g.w) {
    const float* first = x_img + (top * g.w + left) * g.cin;
    for (int r = 0; r < 4; ++r)
      for (int q = 0; q < 4; ++q) ptr[r][q] = first + (r * g.w + q) * g.cin;
    return;
  }
  for (int r = 0; r < 4; ++r)
    for (int q = 0; q < 4; ++q) {
      const int64_t row = top + r, col = left + q;
      const bool inside = row >= 0 && row < g.h && col >= 0 && col < g.w;
      ptr[r][q] = inside ? x_img + (row * g.w + col) * g.cin : zeros;
    }
}

// u[xi][ci][co] = (G g G^T)[xi] for the 3x3 kernel g = w[:, :, ci, co].
void WinogradWeights(const float* w, int64_t cin, int64_t cout, float* u) {
  const int64_t plane = cin * cout;
  for (int64_t k = 0; k < plane; ++k) {
    float g[3][3], t[4][3];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) g[i][j] = w[(i * 3 + j) * plane + k];
    for (int j = 0; j < 3; ++j) {  // t = G g
      t[0][j] = g[0][j];
      t[1][j] = 0.5f * (g[0][j] + g[1][j] + g[2][j]);
      t[2][j] = 0.5f * (g[0][j] - g[1][j] + g[2][j]);
      t[3][j] = g[2][j];
    }
    for (int i = 0; i < 4; ++i) {  // u = t G^T
      u[(i * 4 + 0) * plane + k] = t[i][0];
      u[(i * 4 + 1) * plane + k] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
      u[(i * 4 + 2) * plane + k] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
      u[(i * 4 + 3) * plane + k] = t[i][2];
    }
  }
}

// v[xi][t][ci] = (B^T d B)[xi] of the 4x4 input patch of each tile t0 .. t0 + tiles - 1 (tiles
// numbered row-major over the image's tile grid of `tile_cols` columns); pixels outside the image
// read as zeros.
FREQJAX_INLINE void WinogradInput(const Geometry& g, const float* x_img, int64_t tile_cols, int64_t t0, int tiles,
                                  const float* zeros, float* v) {
  const int64_t xi_step = PointStride(kWinoTiles, g.cin);
  ForTiles(tile_cols, t0, tiles, [&](int t, int64_t tile_row, int64_t tile_col) {
    const float* ptr[4][4];
    PatchPointers(g, x_img, 2 * tile_row - g.pt, 2 * tile_col - g.pl, zeros, ptr);
    for (int64_t c = 0; c < g.cin; c += kLanes) {
      Vec d[4][4];
      for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 4; ++q) d[r][q] = Load(ptr[r][q] + c);
      Vec e[4][4];
      for (int q = 0; q < 4; ++q) {  // B^T d
        e[0][q] = d[0][q] - d[2][q];
        e[1][q] = d[1][q] + d[2][q];
        e[2][q] = d[2][q] - d[1][q];
        e[3][q] = d[1][q] - d[3][q];
      }
      for (int r = 0; r < 4; ++r) {  // (B^T d) B
        float* vr = v + r * 4 * xi_step + t * g.cin + c;
        Store(vr, e[r][0] - e[r][2]);
        Store(vr + xi_step, e[r][1] + e[r][2]);
        Store(vr + 2 * xi_step, e[r][2] - e[r][1]);
        Store(vr + 3 * xi_step, e[r][1] - e[r][3]);
      }
    }
  });
}

// m[t][co] = sum_ci v[t][ci] * u[ci][co] for T tiles x CB output vectors, in registers.
template <int T, int CB>
FREQJAX_INLINE void WinogradProduct(const float* v, const float* u, int64_t cin, int64_t cout, float* m) {
  Vec acc[T][CB];
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < CB; ++c) acc[t][c] = Vec{};
#pragma GCC unroll 4
  for (int64_t ci = 0; ci < cin; ++ci) {
    Vec wv[CB];
    for (int c = 0; c < CB; ++c) wv[c] = Load(u + ci * cout + c * kLanes);
    for (int t = 0; t < T; ++t) {
      const float xv = v[t * cin + ci];
      for (int c = 0; c < CB; ++c) acc[t][c] += xv * wv[c];
    }
  }
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < CB; ++c) Store(m + t * cout + c * kLanes, acc[t][c]);
}

// Tiles [t, tiles) of a block in register blocks of T (then T / 2, ...), for CB output vectors at co.
template <int T, int CB>
FREQJAX_INLINE void WinogradProducts(const float* v, const float* u, int64_t cin, int64_t cout, int t, int tiles,
                                     float* m) {
  for (; t + T <= tiles; t += T) WinogradProduct<T, CB>(v + t * cin, u, cin, cout, m + t * cout);
  if constexpr (T > 1) {
    if (t < tiles) WinogradProducts<T / 2 + T % 2, CB>(v, u, cin, cout, t, tiles, m);
  }
}

// y = A^T m A for each tile of the block, cropped to the output.
FREQJAX_INLINE void WinogradOutput(const Geometry& g, const float* m, int64_t tile_cols, int64_t t0, int tiles,
                                   float* y_img) {
  const int64_t xi_step = PointStride(kWinoTiles, g.cout);
  ForTiles(tile_cols, t0, tiles, [&](int t, int64_t tile_row, int64_t tile_col) {
    const int64_t oh = 2 * tile_row, ow = 2 * tile_col;
    const bool full = oh + 1 < g.ho && ow + 1 < g.wo;  // no cropping: four unconditional stores
    for (int64_t c = 0; c < g.cout; c += kLanes) {
      const float* mp = m + t * g.cout + c;
      Vec a[2][4];
      for (int q = 0; q < 4; ++q) {  // A^T m
        const Vec m0 = Load(mp + q * xi_step), m1 = Load(mp + (4 + q) * xi_step);
        const Vec m2 = Load(mp + (8 + q) * xi_step), m3 = Load(mp + (12 + q) * xi_step);
        a[0][q] = m0 + m1 + m2;
        a[1][q] = m1 - m2 - m3;
      }
      for (int r = 0; r < 2 && (full || oh + r < g.ho); ++r) {  // (A^T m) A
        float* yp = y_img + ((oh + r) * g.wo + ow) * g.cout + c;
        Store(yp, a[r][0] + a[r][1] + a[r][2]);
        if (full || ow + 1 < g.wo) Store(yp + g.cout, a[r][1] - a[r][2] - a[r][3]);
      }
    }
  });
}

// F(4x4, 3x3): 36 products per 4x4 output tile and channel pair, 2.25 per output where F(2x2,
// 3x3) takes 4, with transforms that cost about as much per output. Its interpolation points are
// 0, -1, 1, 1/2, -2 (and infinity) rather than Lavin & Gray's 0, +-1, +-2: their transforms are a
// fifth longer but round 2-3x less (float32 relative error vs float64 ~2e-6 where the usual points
// give ~5e-6 at 16-32 input channels, F(2x2) ~3e-7). It serves convs with few input channels
// (kWino43MaxCin), where F(2x2) is bound by its transforms rather than its products: on a 2-core
// Xeon (benchmarks/kernel_ab.py op) 1.29x F(2x2)'s speed at 128x32x32x16 -> 16 and 1.50x at 128x16x16x32 -> 32; at 64
// channels 1.25x at 32x56x56x64 but 0.88x at 128x8x8x64 (too few tiles per image), so 64 and more
// keep F(2x2) for now (benchmarks/kernel_ab.py op).
constexpr int64_t kWino43MaxCin = 32;
constexpr int kWino43Tiles = 8;  // tiles per block (one tile row of a 32-pixel-wide image)

// u[xi][ci][co] = (G g G^T)[xi], G = [1 0 0; -1/3 1/3 -1/3; 1/3 1/3 1/3; -16/15 -8/15 -4/15;
// 1/15 -2/15 4/15; 0 0 1].
void Winograd43Weights(const float* w, int64_t cin, int64_t cout, float* u) {
  const int64_t plane = cin * cout;
  auto transform = [](const float* in, float* out) {  // G applied to 3 values
    out[0] = in[0];
    out[1] = (-in[0] + in[1] - in[2]) / 3.0f;
    out[2] = (in[0] + in[1] + in[2]) / 3.0f;
    out[3] = (-16.0f * in[0] - 8.0f * in[1] - 4.0f * in[2]) / 15.0f;
    out[4] = (in[0] - 2.0f * in[1] + 4.0f * in[2]) / 15.0f;
    out[5] = in[2];
  };
  for (int64_t k = 0; k < plane; ++k) {
    float g[3][3], t[6][3], col[3], out[6];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) g[i][j] = w[(i * 3 + j) * plane + k];
    for (int j = 0; j < 3; ++j) {  // t = G g
      for (int i = 0; i < 3; ++i) col[i] = g[i][j];
      transform(col, out);
      for (int i = 0; i < 6; ++i) t[i][j] = out[i];
    }
    for (int i = 0; i < 6; ++i) {  // u = t G^T
      transform(t[i], out);
      for (int j = 0; j < 6; ++j) u[(i * 6 + j) * plane + k] = out[j];
    }
  }
}

// B^T applied to 6 values: B^T = [1 -3/2 -2 3/2 1 0; 0 1 -5/2 1/2 1 0; 0 -1 1/2 5/2 1 0;
// 0 -2 -1 2 1 0; 0 1/2 -1 -1/2 1 0; 0 1 -3/2 -2 3/2 1].
FREQJAX_INLINE void Winograd43In(const Vec d[6], Vec t[6]) {
  const Vec a = d[3] - d[1], b = d[4] - d[2];
  t[0] = (d[0] + d[4]) - 2.0f * d[2] + 1.5f * a;
  t[1] = (d[1] + d[4]) - 2.5f * d[2] + 0.5f * d[3];
  t[2] = (d[4] - d[1]) + 0.5f * d[2] + 2.5f * d[3];
  t[3] = b + 2.0f * a;
  t[4] = b - 0.5f * a;
  t[5] = (d[1] + d[5]) - 2.0f * d[3] + 1.5f * b;
}

// A^T applied to 6 values: A^T = [1 1 1 1 1 0; 0 -1 1 1/2 -2 0; 0 1 1 1/4 4 0; 0 -1 1 1/8 -8 1].
FREQJAX_INLINE void Winograd43Out(const Vec m[6], Vec o[4]) {
  const Vec s = m[1] + m[2], d = m[2] - m[1];
  o[0] = m[0] + s + m[3] + m[4];
  o[1] = d + 0.5f * m[3] - 2.0f * m[4];
  o[2] = s + 0.25f * m[3] + 4.0f * m[4];
  o[3] = d + 0.125f * m[3] - 8.0f * m[4] + m[5];
}

// v[xi][t][ci] = (B^T d B)[xi] of the 6x6 input patch of each tile (pixels outside read as zeros).
FREQJAX_INLINE void Winograd43Input(const Geometry& g, const float* x_img, int64_t tile_cols, int64_t t0, int tiles,
                                    const float* zeros, float* v) {
  const int64_t xi_step = PointStride(kWino43Tiles, g.cin);
  ForTiles(tile_cols, t0, tiles, [&](int t, int64_t tile_row, int64_t tile_col) {
    const int64_t top = 4 * tile_row - g.pt, left = 4 * tile_col - g.pl;
    const bool inside = top >= 0 && top + 6 <= g.h && left >= 0 && left + 6 <= g.w;
    for (int64_t c = 0; c < g.cin; c += kLanes) {
      Vec e[6][6];  // B^T d, column by column
      for (int q = 0; q < 6; ++q) {
        Vec d[6];
        for (int r = 0; r < 6; ++r) {
          const int64_t row = top + r, col = left + q;
          const bool in = inside || (row >= 0 && row < g.h && col >= 0 && col < g.w);
          d[r] = Load((in ? x_img + (row * g.w + col) * g.cin : zeros) + c);
        }
        Vec out[6];
        Winograd43In(d, out);
        for (int i = 0; i < 6; ++i) e[i][q] = out[i];
      }
      for (int i = 0; i < 6; ++i) {  // (B^T d) B
        Vec out[6];
        Winograd43In(e[i], out);
        float* vr = v + i * 6 * xi_step + t * g.cin + c;
        for (int j = 0; j < 6; ++j) Store(vr + j * xi_step, out[j]);
      }
    }
  });
}

// y = A^T m A for each tile, cropped to the output.
FREQJAX_INLINE void Winograd43Output(const Geometry& g, const float* m, int64_t tile_cols, int64_t t0, int tiles,
                                     float* y_img) {
  const int64_t xi_step = PointStride(kWino43Tiles, g.cout);
  ForTiles(tile_cols, t0, tiles, [&](int t, int64_t tile_row, int64_t tile_col) {
    const int64_t oh = 4 * tile_row, ow = 4 * tile_col;
    const int rows = static_cast<int>(std::min<int64_t>(4, g.ho - oh));
    const int cols = static_cast<int>(std::min<int64_t>(4, g.wo - ow));
    for (int64_t c = 0; c < g.cout; c += kLanes) {
      const float* mp = m + t * g.cout + c;
      Vec a[4][6];  // A^T m, column by column
      for (int q = 0; q < 6; ++q) {
        Vec col[6], out[4];
        for (int i = 0; i < 6; ++i) col[i] = Load(mp + (i * 6 + q) * xi_step);
        Winograd43Out(col, out);
        for (int r = 0; r < 4; ++r) a[r][q] = out[r];
      }
      for (int r = 0; r < rows; ++r) {  // (A^T m) A
        Vec out[4];
        Winograd43Out(a[r], out);
        float* yp = y_img + ((oh + r) * g.wo + ow) * g.cout + c;
        if (cols == 4) {  // a whole tile: a fixed trip count, so the stores unroll
          for (int q = 0; q < 4; ++q) Store(yp + q * g.cout, out[q]);
        } else {
          for (int q = 0; q < cols; ++q) Store(yp + q * g.cout, out[q]);
        }
      }
    }
  });
}

// The forward of one Winograd scheme: F(2x2, 3x3) (kTile 2, 16 points) or F(4x4, 3x3) (4, 36).
template <int kTile>
struct WinogradScheme;

template <>
struct WinogradScheme<2> {
  static constexpr int kPoints = 16, kTiles = kWinoTiles;
  static void Weights(const float* w, int64_t cin, int64_t cout, float* u) { WinogradWeights(w, cin, cout, u); }
  static FREQJAX_INLINE void Input(const Geometry& g, const float* x, int64_t tile_cols, int64_t t0, int tiles,
                                   const float* zeros, float* v) {
    WinogradInput(g, x, tile_cols, t0, tiles, zeros, v);
  }
  static FREQJAX_INLINE void Output(const Geometry& g, const float* m, int64_t tile_cols, int64_t t0, int tiles,
                                    float* y) {
    WinogradOutput(g, m, tile_cols, t0, tiles, y);
  }
};

template <>
struct WinogradScheme<4> {
  static constexpr int kPoints = 36, kTiles = kWino43Tiles;
  static void Weights(const float* w, int64_t cin, int64_t cout, float* u) { Winograd43Weights(w, cin, cout, u); }
  static FREQJAX_INLINE void Input(const Geometry& g, const float* x, int64_t tile_cols, int64_t t0, int tiles,
                                   const float* zeros, float* v) {
    Winograd43Input(g, x, tile_cols, t0, tiles, zeros, v);
  }
  static FREQJAX_INLINE void Output(const Geometry& g, const float* m, int64_t tile_cols, int64_t t0, int tiles,
                                    float* y) {
    Winograd43Output(g, m, tile_cols, t0, tiles, y);
  }
};

template <int kTile>
void WinogradForwardRun(ffi::ThreadPool& pool, const Geometry& geometry, const float* W, const float* X, float* Y) {
  using S = WinogradScheme<kTile>;
  const Geometry& g = geometry;
  std::vector<float> u(S::kPoints * g.cin * g.cout), zeros(g.cin, 0.0f);
  S::Weights(W, g.cin, g.cout, u.data());
  const int64_t tile_cols = (g.wo + kTile - 1) / kTile, tiles_per_image = (g.ho + kTile - 1) / kTile * tile_cols;
  const int64_t blocks = (tiles_per_image + S::kTiles - 1) / S::kTiles;
  // One task per block of S::kTiles consecutive tiles of one image (crossing tile rows, so small
  // images still fill the register blocks).
  WithChannels<FREQJAX_WINOGRAD_PAIRS>(g.cin, g.cout, [&](auto ci, auto co) {
    ParallelFor(pool, g.n * blocks, [&](int64_t task) {
      const Geometry g = FixChannels<ci, co>(geometry);
      const int64_t img = task / blocks, t0 = task % blocks * S::kTiles;
      const int tiles = static_cast<int>(std::min<int64_t>(S::kTiles, tiles_per_image - t0));
      const int64_t v_step = PointStride(S::kTiles, g.cin), m_step = PointStride(S::kTiles, g.cout);
      thread_local std::vector<float> v, m;
      v.resize(S::kPoints * v_step);
      m.resize(S::kPoints * m_step);
      S::Input(g, X + img * g.h * g.w * g.cin, tile_cols, t0, tiles, zeros.data(), v.data());
      for (int xi = 0; xi < S::kPoints; ++xi) {
        const float* vx = v.data() + xi * v_step;
        const float* ux = u.data() + xi * g.cin * g.cout;
        float* mx = m.data() + xi * m_step;
        // Register blocks of 24, 16 and 8 accumulators on AVX-512: 6 x 4 and 8 x 1 ran 1.4x and 1.1x
        // faster than 4 x 4 and 16 x 1 at 64 and 16 channels (A/B of two builds, as above).
        ForChannelTiles(0, g.cout, [&](auto cb, int64_t c) {
          constexpr int T = TileRows(cb, cb >= 4 ? 6 : 8);
          WinogradProducts<T, cb>(vx, ux + c, g.cin, g.cout, 0, tiles, mx + c);
        });
      }
      S::Output(g, m.data(), tile_cols, t0, tiles, Y + img * g.ho * g.wo * g.cout);
    });
  });
}

ffi::Error WinogradForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                               ffi::ResultBuffer<ffi::F32> y, int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  const auto yd = y->dimensions();
  const Geometry g =
      MakeGeometry(x.dimensions(), w.dimensions(), yd[1], Width(yd, w.dimensions()[3]), sh, sw, pt, pl);
  if (g.cin % kChannelMultiple != 0 || g.cout % kChannelMultiple != 0 || g.kh != 3 || g.kw != 3 || sh != 1 || sw != 1)
    return ffi::Error::InvalidArgument("freqjax winograd: needs a 3x3 stride-1 conv, C_in and C_out multiples of 16");
  if (g.cin <= kWino43MaxCin)
    WinogradForwardRun<4>(pool, g, w.typed_data(), x.typed_data(), y->typed_data());
  else
    WinogradForwardRun<2>(pool, g, w.typed_data(), x.typed_data(), y->typed_data());
  return ffi::Error::Success();
}

// Weight gradient of the same convs by Winograd's F(3x3, 2x2): dw (3x3) is the correlation of x
// with dy, so each 2x2 tile of dy and the 4x4 patch of x it meets give
//   dw += A^T [(G dy G^T) (.) (B^T x B)] A,
// and as A^T (.) A is linear the 16 transformed products are summed over all tiles first: per
// transform point xi one GEMM M[xi] (C_in x C_out) += V[xi]^T D[xi] over the tiles, and the output
// transform runs once at the end. 16 products per tile and channel pair instead of 36.
// F(3, 2): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 -1 0 1], G = [1 0; .5 .5; .5 -.5; 0 1],
// A^T = [1 1 1 0; 0 1 -1 0; 0 1 1 1].

// v[xi][t][ci] = (B^T p B)[xi] of the 4x4 input patch p under each dy tile t0 .. t0 + tiles - 1
// (F(3x3, 2x2)'s B^T, above), `v_step` floats between transform points; pixels outside the image
// read as zeros (`zeros`, a pixel's worth). Consecutive tiles of a tile row overlap by two columns,
// so B^T p's columns 2 and 3 of one tile are carried over as columns 0 and 1 of the next instead
// of being loaded and combined again: half the loads, and 1.18x faster weight gradients at 16
// channels on a 2-core Xeon (in-process A/B of two builds; the same change made the
// forward's transform, whose loop runs tiles outside channel vectors, 0.87x at 32 channels).
void WinogradGradInputTransform(const Geometry& g, const float* x_img, int64_t tile_cols, int64_t t0, int tiles,
                                const float* zeros, int64_t v_step, float* v) {
  for (int64_t c = 0; c < g.cin; c += kLanes) {
    Vec e[4][4];  // B^T p: e[i][q] for transform row i and patch column q
    const float* rows[4] = {};  // the patch rows' pixel 0 (channel c), or nullptr outside the image
    ForTiles(tile_cols, t0, tiles, [&](int t, int64_t tile_row, int64_t tile_col) {
      const int64_t top = 2 * tile_row - g.pt, left = 2 * tile_col - g.pl;
      const bool first = t == 0 || tile_col == 0;  // else the same tile row as the previous tile
      if (first) {
        for (int r = 0; r < 4; ++r) {
          const int64_t row = top + r;
          rows[r] = row >= 0 && row < g.h ? x_img + row * g.w * g.cin + c : nullptr;
        }
      }
      auto column = [&](int q) {
        const int64_t col = left + q;
        const bool inside = col >= 0 && col < g.w;
        Vec d[4];
        for (int r = 0; r < 4; ++r) d[r] = Load(inside && rows[r] ? rows[r] + col * g.cin : zeros + c);
        e[0][q] = d[0] - d[2];
        e[1][q] = d[1] + d[2];
        e[2][q] = d[2] - d[1];
        e[3][q] = d[3] - d[1];
      };
      if (!first) {
        for (int i = 0; i < 4; ++i) {
          e[i][0] = e[i][2];
          e[i][1] = e[i][3];
        }
        column(2);
        column(3);
      } else {
        for (int q = 0; q < 4; ++q) column(q);
      }
      for (int i = 0; i < 4; ++i) {  // (B^T p) B
        float* vr = v + i * 4 * v_step + t * g.cin + c;
        Store(vr, e[i][0] - e[i][2]);
        Store(vr + v_step, e[i][1] + e[i][2]);
        Store(vr + 2 * v_step, e[i][2] - e[i][1]);
        Store(vr + 3 * v_step, e[i][3] - e[i][1]);
      }
    });
  }
}

// Tiles transformed per block: each GEMM sums that many tiles into its accumulators between
// loading and storing them. Blocks span images and hold about 4096 floats per transform point and
// operand (32-256 tiles; 256 KiB of scratch per operand up to 128 channels): at 16-64 channels
// and 8-32 pixels a side this ran 1.1-1.2x faster than blocks of 32 tiles of one image (A/B of
// two builds), and made the weight gradient faster than the direct kernel on every shape of
// `benchmarks/cpu_conv_ops.py winograd`.
constexpr int64_t kWinoGradFloats = 4096;
inline int64_t WinogradGradBlock(int64_t cin, int64_t cout) {
  return std::clamp<int64_t>(kWinoGradFloats / std::max(cin, cout), 32, 256);
}

// v[xi][t][ci]: B^T x B of the 4x4 input patch under dy tile t (row-major over the tile grid;
// WinogradGradInputTransform); d[xi][t][co]: G dy G^T of the 2x2 dy tile; dy rows/columns past
// the output and x outside the image read as zeros.
void WinogradGradInputs(const Geometry& g, const float* x_img, const float* dy_img, int64_t tile_cols, int64_t t0,
                        int tiles, const float* zeros, int64_t v_step, int64_t d_step, float* v, float* d) {
  WinogradGradInputTransform(g, x_img, tile_cols, t0, tiles, zeros, v_step, v);
  ForTiles(tile_cols, t0, tiles, [&](int t, int64_t tile_row, int64_t tile_col) {
    const int64_t oh = 2 * tile_row, ow = 2 * tile_col;
    const bool down = oh + 1 < g.ho, right = ow + 1 < g.wo;
    const float* dp = dy_img + (oh * g.wo + ow) * g.cout;
    const float* dp01 = right ? dp + g.cout : zeros;
    const float* dp10 = down ? dp + g.wo * g.cout : zeros;
    const float* dp11 = down && right ? dp + (g.wo + 1) * g.cout : zeros;
    for (int64_t c = 0; c < g.cout; c += kLanes) {
      const Vec g00 = Load(dp + c), g01 = Load(dp01 + c), g10 = Load(dp10 + c), g11 = Load(dp11 + c);
      // G gt: rows g0, (g0 + g1) / 2, (g0 - g1) / 2, g1 of the 2x2 tile, for each of its columns.
      const Vec h[4][2] = {{g00, g01},
                           {0.5f * (g00 + g10), 0.5f * (g01 + g11)},
                           {0.5f * (g00 - g10), 0.5f * (g01 - g11)},
                           {g10, g11}};
      for (int r = 0; r < 4; ++r) {  // (G gt) G^T
        float* dr = d + r * 4 * d_step + t * g.cout + c;
        Store(dr, h[r][0]);
        Store(dr + d_step, 0.5f * (h[r][0] + h[r][1]));
        Store(dr + 2 * d_step, 0.5f * (h[r][0] - h[r][1]));
        Store(dr + 3 * d_step, h[r][1]);
      }
    }
  });
}

// m[ci][co] += sum over tiles of v[t][ci] * d[t][co] for CIB input channels x CB output vectors.
template <int CIB, int CB>
inline void WinogradGradProduct(const float* v, const float* d, int64_t cin, int64_t cout, int tiles, float* m) {
  Vec acc[CIB][CB];
  for (int a = 0; a < CIB; ++a)
    for (int c = 0; c < CB; ++c) acc[a][c] = Load(m + a * cout + c * kLanes);
  for (int t = 0; t < tiles; ++t) {
    Vec dv[CB];
    for (int c = 0; c < CB; ++c) dv[c] = Load(d + t * cout + c * kLanes);
    for (int a = 0; a < CIB; ++a) {
      const float xv = v[t * cin + a];
      for (int c = 0; c < CB; ++c) acc[a][c] += xv * dv[c];
    }
  }
  for (int a = 0; a < CIB; ++a)
    for (int c = 0; c < CB; ++c) Store(m + a * cout + c * kLanes, acc[a][c]);
}

// Input channels [ci, cin) in blocks of CIB, the remainder in smaller blocks.
template <int CIB, int CB>
inline void WinogradGradChannels(const float* v, const float* d, int64_t ci, int64_t cin, int64_t cout, int tiles,
                                 float* m) {
  for (; ci + CIB <= cin; ci += CIB) WinogradGradProduct<CIB, CB>(v + ci, d, cin, cout, tiles, m + ci * cout);
  if constexpr (CIB > 1) {
    if (ci < cin) WinogradGradChannels<CIB / 2, CB>(v, d, ci, cin, cout, tiles, m);
  }
}

ffi::Error WinogradWeightGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                  ffi::ResultBuffer<ffi::F32> dw, int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  const auto dyd = dy.dimensions();
  const Geometry g =
      MakeGeometry(x.dimensions(), dw->dimensions(), dyd[1], Width(dyd, dw->dimensions()[3]), sh, sw, pt, pl);
  if (g.cin % kChannelMultiple != 0 || g.cout % kChannelMultiple != 0 || g.kh != 3 || g.kw != 3 || sh != 1 || sw != 1)
    return ffi::Error::InvalidArgument("freqjax winograd: needs a 3x3 stride-1 conv, C_in and C_out multiples of 16");
  const float* X = x.typed_data();
  const float* DY = dy.typed_data();
  const int64_t plane = g.cin * g.cout, size = 16 * plane, chunks = WeightGradChunks(g.n, size);
  std::vector<float> sums(chunks * size, 0.0f);  // M[xi] per chunk, in the transform domain
  const std::vector<float> zeros(std::max(g.cin, g.cout), 0.0f);
  const int64_t tile_cols = (g.wo + 1) / 2, tiles_per_image = (g.ho + 1) / 2 * tile_cols;
  const int block = static_cast<int>(WinogradGradBlock(g.cin, g.cout));
  // One task per chunk (fixed by the shapes, so the summation order is too).
  ParallelFor(pool, chunks, [&](int64_t chunk) {
    const int64_t img0 = g.n * chunk / chunks, img1 = g.n * (chunk + 1) / chunks;
    const int64_t v_step = PointStride(block, g.cin), d_step = PointStride(block, g.cout);
    thread_local std::vector<float> v, d;  // scratch, fully written before it is read
    v.resize(16 * v_step);
    d.resize(16 * d_step);
    float* m = sums.data() + chunk * size;
    // The chunk's tiles in order (image by image, row-major in each), `block` of them at a time.
    int64_t img = img0, t0 = 0;
    while (img < img1) {
      int tiles = 0;
      for (; tiles < block && img < img1;) {
        const int count = static_cast<int>(std::min<int64_t>(block - tiles, tiles_per_image - t0));
        WinogradGradInputs(g, X + img * g.h * g.w * g.cin, DY + img * g.ho * g.wo * g.cout, tile_cols, t0, count,
                           zeros.data(), v_step, d_step, v.data() + tiles * g.cin, d.data() + tiles * g.cout);
        tiles += count;
        t0 += count;
        if (t0 == tiles_per_image) {
          t0 = 0;
          ++img;
        }
      }
      for (int xi = 0; xi < 16; ++xi) {
        const float* vx = v.data() + xi * v_step;
        const float* dx = d.data() + xi * d_step;
        float* mx = m + xi * plane;
        ForChannelTiles<std::min(2, kMaxTileVecs)>(0, g.cout, [&](auto cb, int64_t co) {
          constexpr int CIB = TileRows(cb, cb == 1 ? 16 : 8);
          WinogradGradChannels<CIB, cb>(vx, dx + co, 0, g.cin, g.cout, tiles, mx + co);
        });
      }
    }
  });
  // Sum the chunks in order (SumChunks, as the direct kernels), then dw = A^T M A per channel pair.
  std::vector<float> total(size);
  SumChunks(pool, sums.data(), chunks, size, total.data());
  float* DW = dw->typed_data();
  ParallelFor(pool, (plane + 1023) / 1024, [&](int64_t b) {
    for (int64_t k = b * 1024; k < std::min(plane, (b + 1) * 1024); ++k) {
      float mm[4][4];
      for (int xi = 0; xi < 16; ++xi) mm[xi / 4][xi % 4] = total[xi * plane + k];
      float a[3][4];
      for (int q = 0; q < 4; ++q) {  // A^T M
        a[0][q] = mm[0][q] + mm[1][q] + mm[2][q];
        a[1][q] = mm[1][q] - mm[2][q];
        a[2][q] = mm[1][q] + mm[2][q] + mm[3][q];
      }
      for (int i = 0; i < 3; ++i) {  // (A^T M) A
        DW[(i * 3 + 0) * plane + k] = a[i][0] + a[i][1] + a[i][2];
        DW[(i * 3 + 1) * plane + k] = a[i][1] - a[i][2];
        DW[(i * 3 + 2) * plane + k] = a[i][1] + a[i][2] + a[i][3];
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace freqjax
