// Direct NHWC convolution kernels for XLA's CPU backend, called through the XLA FFI.
//
// On the small-channel shapes of CNN training (16-64 channels, 8-32 pixels a side) XLA CPU's
// generic convolution and its gradients are 1.5-3x slower than these kernels, its grouped
// (depthwise) convolution far more (benchmarks/README.md: benchmarks/cpu_conv_ops.py ops). The dense
// kernels keep a block of output pixels x output channels in vector registers and stream the
// kernel taps and input channels over them, the classic register-blocked direct convolution; the
// depthwise ones stream pixels for one vector of channels at a time. Stride-1 3x3 dense convs
// also have Winograd kernels (F(2x2, 3x3) forward, F(3x3, 2x2) weight gradient), which the Python
// side picks where they are faster.
//
// Layouts: x (N, H, W, C_in), w (KH, KW, C_in, C_out), y (N, Ho, Wo, C_out), all float32 and
// row-major (depthwise: w (KH, KW, C)). C_out (depthwise: C) must be a multiple of 16 on every
// target, whole vectors of any width (simd.h); the Python side checks this and falls back to XLA
// otherwise. Zero padding is handled by
// bounds, never by a padded copy. The input gradient is the forward kernel applied per stride
// phase: for strided dense convs all phases in one call writing into dx (ConvInputGradImpl), else
// from the Python side (freqjax/models/cpu_conv.py, _native_input_grad).
//
// Vectors are GCC/Clang vector extensions whose width, like the register tiles, comes from the
// compile target (simd.h): one source compiles to AVX-512, AVX2, NEON or generic code for
// whatever -march the build chose. Work is split over XLA's intra-op thread pool; the calling
// thread takes part, and results do not depend on how the work is split (each output element is
// summed in a fixed order by one task).

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

namespace {

using namespace freqjax;  // Vec, kLanes and the register-tile sizes of the compile target (simd.h)

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

// Forward: RB consecutive output pixels of one row x CB vectors of output channels, accumulated in
// registers over taps [i0, i1) x [j0, j1) and all input channels. `x_pix` points at the input pixel
// that tap (0, 0) of the first output pixel reads (possibly outside the image: only taps inside the
// given ranges are read).
template <int RB, int CB>
FREQJAX_INLINE void ForwardBlock(const Geometry& g, const float* x_pix, const float* w, float* y, int64_t i0,
                                 int64_t i1, int64_t j0, int64_t j1) {
  // Small blocks (a row's edge pixels, remainders) get K accumulator sets over consecutive input
  // channels, so that at least 8 FMA chains are in flight (one chain waits out the FMA latency at
  // every step); the sets are added in a fixed order at the end.
  constexpr int K = RB * CB >= kFmaChains ? 1 : (kFmaChains + RB * CB - 1) / (RB * CB);
  Vec acc[K][RB][CB];
  for (int k = 0; k < K; ++k)
    for (int r = 0; r < RB; ++r)
      for (int c = 0; c < CB; ++c) acc[k][r][c] = Vec{};
  const int64_t pix_step = g.sw * g.cin, row_step = g.w * g.cin;
  // With every column tap inside, taps (j, ci) of a row are kw * C_in consecutive floats in both x
  // and w: one loop instead of two, which matters when C_in is small (an RGB stem: 9 steps, not 3 x 3).
  const bool whole_row = j0 == 0 && j1 == g.kw;
  const int64_t runs = whole_row ? 1 : j1 - j0, run_len = whole_row ? g.kw * g.cin : g.cin;
  auto step = [&](int k, const float* xp, const float* wp) {
    Vec wv[CB];
    for (int c = 0; c < CB; ++c) wv[c] = Load(wp + c * kLanes);
    for (int r = 0; r < RB; ++r) {
      const float xv = xp[r * pix_step];
      for (int c = 0; c < CB; ++c) acc[k][r][c] += xv * wv[c];
    }
  };
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t jr = 0; jr < runs; ++jr) {
      const int64_t j = whole_row ? 0 : j0 + jr;
      const float* xp = x_pix + i * row_step + j * g.cin;
      const float* wp = w + (i * g.kw + j) * g.cin * g.cout;
      int64_t ci = 0;
      for (; ci + K <= run_len; ci += K)
        for (int k = 0; k < K; ++k) step(k, xp + ci + k, wp + (ci + k) * g.cout);
      for (; ci < run_len; ++ci) step(0, xp + ci, wp + ci * g.cout);
    }
  }
  for (int k = 1; k < K; ++k)
    for (int r = 0; r < RB; ++r)
      for (int c = 0; c < CB; ++c) acc[0][r][c] += acc[k][r][c];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < CB; ++c) Store(y + r * g.y_step + c * kLanes, acc[0][r][c]);
}

// Interior pixels [o0, o1) of one output row, whose taps all read inside the row: full RB blocks,
// then the remainder in blocks of RB / 2, RB / 4, ... (a 16-pixel row at RB 12: 12 + 3 + 1 rather
// than 12 + four single pixels, which take two loads per FMA).
template <int RB, int CB>
FREQJAX_INLINE void ForwardInterior(const Geometry& g, const float* x_row, const float* w, float* y_row, int64_t o0,
                                    int64_t o1, int64_t i0, int64_t i1) {
  auto at = [&](int64_t o) { return x_row + (o * g.sw - g.pl) * g.cin; };
  int64_t o = o0;
  for (; o + RB <= o1; o += RB) ForwardBlock<RB, CB>(g, at(o), w, y_row + o * g.y_step, i0, i1, 0, g.kw);
  if constexpr (RB > 1) {
    if (o < o1) ForwardInterior<RB / 2, CB>(g, x_row, w, y_row, o, o1, i0, i1);
  }
}

template <int CB>
FREQJAX_INLINE void ForwardRow(const Geometry& g, const float* x_img, const float* w, float* y_row, int64_t oh) {
  const int64_t top = oh * g.sh - g.pt;
  const Range rows = TapsInside(top, g.kh, g.h);   // tap rows inside the image for this output row
  const float* x_row = x_img + top * g.w * g.cin;  // row of tap 0 (maybe outside; only `rows` read)
  const Range inner = InteriorColumns(g);
  auto edge = [&](int64_t o) {
    const int64_t left = o * g.sw - g.pl;
    const Range cols = TapsInside(left, g.kw, g.w);
    ForwardBlock<1, CB>(g, x_row + left * g.cin, w, y_row + o * g.y_step, rows.begin, rows.end, cols.begin,
                        cols.end);
  };
  for (int64_t o = 0; o < inner.begin; ++o) edge(o);
  // Up to kAccumulators accumulators (TileRows). With 4 vectors (AVX-512), 6 pixels rather than 4:
  // a 4x4 block ran at about half the FMA rate of 6x4 in a standalone loop, and 64-channel layers
  // 1.2x slower (A/B of two builds in one process; neither harness is in the repository).
  constexpr int RB = TileRows(CB, CB == 1 ? 12 : (CB == 2 ? 8 : 6));
  ForwardInterior<RB, CB>(g, x_row, w, y_row, inner.begin, inner.end, rows.begin, rows.end);
  for (int64_t o = inner.end; o < g.wo; ++o) edge(o);
}

// Output row oh (pixels y_step floats apart from y_row) for all output channels, in tiles of
// kMaxTileVecs vectors, then halves (ForChannelTiles).
FREQJAX_INLINE void ForwardRowAllChannels(const Geometry& g, const float* x_img, const float* w, float* y_row,
                                          int64_t oh) {
  ForChannelTiles(0, g.cout, [&](auto cb, int64_t c) { ForwardRow<cb>(g, x_img, w + c, y_row + c, oh); });
}

ffi::Error ConvForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                           ffi::ResultBuffer<ffi::F32> y, int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  const auto yd = y->dimensions();
  const Geometry geometry =
      MakeGeometry(x.dimensions(), w.dimensions(), yd[1], Width(yd, w.dimensions()[3]), sh, sw, pt, pl);
  if (geometry.cout % kChannelMultiple != 0) return ffi::Error::InvalidArgument("freqjax conv: C_out must be a multiple of 16");
  const float* X = x.typed_data();
  const float* W = w.typed_data();
  float* Y = y->typed_data();
  // One task per output row (of one image): enough tasks to balance, each a few microseconds or more.
  WithChannels<FREQJAX_DIRECT_PAIRS>(geometry.cin, geometry.cout, [&](auto ci, auto co) {
    ParallelFor(pool, geometry.n * geometry.ho, [&](int64_t t) {
      const Geometry g = FixChannels<ci, co>(geometry);
      const int64_t img = t / g.ho, oh = t % g.ho;
      ForwardRowAllChannels(g, X + img * g.h * g.w * g.cin, W, Y + (img * g.ho + oh) * g.wo * g.cout, oh);
    });
  });
  return ffi::Error::Success();
}

// Input gradient of a strided conv, dx (N, H, W, C_in) from dy (N, Ho, Wo, C_out) and w (KH, KW,
// C_in, C_out). Along an axis, input pixel p = stride * m + a (phase a) receives
//   sum_u dy[m - offset + u] * w[r + stride * (taps - 1 - u)],  u < taps,
// so each (row phase, column phase) is a stride-1 correlation of dy with the flipped sub-kernel
// w[r::stride] (input and output channels swapped): the forward kernel, writing its outputs
// `stride` pixels apart straight into dx. No product meets a zero of the dilated dy, and there
// is no separate interleaving pass. (freqjax/models/cpu_conv.py, _phase, is the same algebra.)
struct Phase {
  int64_t first_tap, taps, offset, length;
};

inline Phase PhaseOf(int64_t size, int64_t kernel, int64_t stride, int64_t pad, int64_t a) {
  const int64_t r = (a + pad) % stride, q = (a + pad) / stride;
  const int64_t taps = r < kernel ? (kernel - r + stride - 1) / stride : 0;
  const int64_t length = a < size ? (size - a + stride - 1) / stride : 0;
  return {r, taps, taps - 1 - q, length};
}

ffi::Error ConvInputGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                             ffi::ResultBuffer<ffi::F32> dx, int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  const auto yd = dy.dimensions(), wd = w.dimensions(), xd = dx->dimensions();
  const int64_t n = xd[0], h = xd[1], wx = xd[2], cin = xd[3], kh = wd[0], kw = wd[1], cout = wd[3];
  if (cin % kChannelMultiple != 0)
    return ffi::Error::InvalidArgument("freqjax conv input gradient: C_in must be a multiple of 16");
  const float* W = w.typed_data();
  struct PhaseConv {
    Geometry g;
    std::vector<float> w;  // (taps_h, taps_w, C_out, C_in): flipped, channels swapped
  };
  std::vector<PhaseConv> phases;
  for (int64_t a = 0; a < sh; ++a)
    for (int64_t b = 0; b < sw; ++b) {
      const Phase ph = PhaseOf(h, kh, sh, pt, a), pw = PhaseOf(wx, kw, sw, pl, b);
      PhaseConv p{{n, yd[1], Width(yd, cout), cout, ph.taps, pw.taps, cin, ph.length, pw.length, 1, 1, ph.offset,
                   pw.offset, sw * cin},
                  std::vector<float>(ph.taps * pw.taps * cout * cin)};
      for (int64_t u = 0; u < ph.taps; ++u)
        for (int64_t v = 0; v < pw.taps; ++v) {
          const int64_t i = ph.first_tap + sh * (ph.taps - 1 - u), j = pw.first_tap + sw * (pw.taps - 1 - v);
          const float* src = W + (i * kw + j) * cin * cout;
          float* dst = p.w.data() + (u * pw.taps + v) * cout * cin;
          for (int64_t ci = 0; ci < cin; ++ci)
            for (int64_t co = 0; co < cout; ++co) dst[co * cin + ci] = src[ci * cout + co];
        }
      phases.push_back(std::move(p));
    }
  const float* DY = dy.typed_data();
  float* DX = dx->typed_data();
  // One task per dx row: its row phase, then each column phase's pixels (phases without taps get
  // the zeros of an empty sum).
  WithChannels<FREQJAX_DIRECT_PAIRS>(cout, cin, [&](auto ci, auto co) {
    ParallelFor(pool, n * h, [&](int64_t t) {
      const int64_t img = t / h, row = t % h;
      for (int64_t b = 0; b < std::min(sw, wx); ++b) {
        const PhaseConv& p = phases[(row % sh) * sw + b];
        ForwardRowAllChannels(FixChannels<ci, co>(p.g), DY + img * yd[1] * yd[2] * yd[3], p.w.data(),
                              DX + ((img * h + row) * wx + b) * cin, row / sh);
      }
    });
  });
  return ffi::Error::Success();
}

// Weight gradient of one tap (i, j) over images [img0, img1): dw[ci, co] = sum over output pixels
// of x[pixel read by the tap, ci] * dy[pixel, co], for CIB input channels x CB output vectors held
// in registers; added into `out` (C_in, C_out).
template <int CIB, int CB>
inline void WeightGradBlock(const Geometry& g, const float* X, const float* DY, int64_t img0, int64_t img1, int64_t i,
                            int64_t j, int64_t ci0, int64_t co0, float* out) {
  // Output pixels whose tap (i, j) reads inside the image.
  const Range ohs = OutputsInside(i - g.pt, g.sh, g.h, g.ho), ows = OutputsInside(j - g.pl, g.sw, g.w, g.wo);
  // Small blocks (an RGB stem's 3 input channels) get U accumulator sets for U consecutive pixels,
  // so that at least 8 FMA chains are in flight; the sets are added in a fixed order at the end.
  constexpr int U = CIB * CB >= kFmaChains ? 1 : kFmaChains / (CIB * CB);
  Vec acc[U][CIB][CB];
  for (int u = 0; u < U; ++u)
    for (int a = 0; a < CIB; ++a)
      for (int c = 0; c < CB; ++c) acc[u][a][c] = Vec{};
  auto accumulate = [&](int u, const float* dyp, const float* xp) {
    Vec dv[CB];
    for (int c = 0; c < CB; ++c) dv[c] = Load(dyp + c * kLanes);
    for (int a = 0; a < CIB; ++a) {
      const float xv = xp[a];
      for (int c = 0; c < CB; ++c) acc[u][a][c] += xv * dv[c];
    }
  };
  const int64_t x_step = g.sw * g.cin;
  for (int64_t img = img0; img < img1; ++img) {
    for (int64_t oh = ohs.begin; oh < ohs.end; ++oh) {
      const float* dy_row = DY + ((img * g.ho + oh) * g.wo) * g.cout + co0;
      const float* x_row = X + ((img * g.h + oh * g.sh + i - g.pt) * g.w) * g.cin + ci0;
      int64_t ow = ows.begin;
      for (; ow + U <= ows.end; ow += U) {
        const float* dyp = dy_row + ow * g.cout;
        const float* xp = x_row + (ow * g.sw + j - g.pl) * g.cin;
        for (int u = 0; u < U; ++u) accumulate(u, dyp + u * g.cout, xp + u * x_step);
      }
      for (; ow < ows.end; ++ow) accumulate(0, dy_row + ow * g.cout, x_row + (ow * g.sw + j - g.pl) * g.cin);
    }
  }
  for (int u = 1; u < U; ++u)
    for (int a = 0; a < CIB; ++a)
      for (int c = 0; c < CB; ++c) acc[0][a][c] += acc[u][a][c];
  for (int a = 0; a < CIB; ++a)
    for (int c = 0; c < CB; ++c) {
      float* o = out + (ci0 + a) * g.cout + co0 + c * kLanes;
      Store(o, Load(o) + acc[0][a][c]);
    }
}

// Input channels [ci0, ci1) in blocks of CIB, the remainder in one smaller block.
template <int CIB, int CB>
void WeightGradChannels(const Geometry& g, const float* X, const float* DY, int64_t img0, int64_t img1, int64_t i,
                        int64_t j, int64_t ci0, int64_t ci1, int64_t co0, float* out) {
  int64_t ci = ci0;
  for (; ci + CIB <= ci1; ci += CIB) WeightGradBlock<CIB, CB>(g, X, DY, img0, img1, i, j, ci, co0, out);
  if constexpr (CIB > 1) {
    if (ci < ci1) WeightGradChannels<CIB / 2, CB>(g, X, DY, img0, img1, i, j, ci, ci1, co0, out);
  }
}

// Weight gradient of a 3x3 conv with CIN <= 3 input channels (an RGB or grayscale stem) for the
// output vector at co0, over images [img0, img1): the (tap, input channel) sums of ROWS tap rows
// from i0 on stay in registers, so dy is read once per group of tap rows, where the per-tap blocks
// above read it once per tap and block of input channels (18 times for RGB). All three rows (27
// sums for RGB) where the registers hold them (32-register targets), one row at a time on AVX2.
// Added into `out` (3, 3, CIN, C_out).
template <int CIN>
constexpr int kStemRows = std::max(1, std::min(3, (kRegisters - 4) / (3 * CIN)));

template <int CIN, int ROWS = kStemRows<CIN>>
void WeightGradStem(const Geometry& g, const float* X, const float* DY, int64_t img0, int64_t img1, int64_t co0,
                    int i0, float* out) {
  const int tap_rows = std::min(ROWS, 3 - i0);  // rows i0 .. i0 + tap_rows - 1
  Vec acc[ROWS][3][CIN];
  for (int i = 0; i < ROWS; ++i)
    for (int j = 0; j < 3; ++j)
      for (int c = 0; c < CIN; ++c) acc[i][j][c] = Vec{};
  for (int64_t img = img0; img < img1; ++img) {
    for (int64_t oh = 0; oh < g.ho; ++oh) {
      const int64_t top = oh * g.sh - g.pt;
      const Range rows = TapsInside(top, 3, g.h);
      const float* dy_row = DY + (img * g.ho + oh) * g.wo * g.cout + co0;
      const float* x_top = X + (img * g.h + top + i0) * g.w * CIN;  // row of tap i0 (only `rows` read)
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const Vec dv = Load(dy_row + ow * g.cout);
        const int64_t left = ow * g.sw - g.pl;
        const Range cols = TapsInside(left, 3, g.w);
        if (rows.begin <= i0 && rows.end >= i0 + ROWS && cols.begin == 0 && cols.end == 3) {  // no checks
          for (int i = 0; i < ROWS; ++i) {
            const float* xp = x_top + (i * g.w + left) * CIN;
            for (int j = 0; j < 3; ++j)
              for (int c = 0; c < CIN; ++c) acc[i][j][c] += xp[j * CIN + c] * dv;
          }
          continue;
        }
        for (int i = 0; i < tap_rows; ++i) {
          if (i0 + i < rows.begin || i0 + i >= rows.end) continue;
          const float* xp = x_top + (i * g.w + left) * CIN;
          for (int j = 0; j < 3; ++j) {
            if (j < cols.begin || j >= cols.end) continue;
            for (int c = 0; c < CIN; ++c) acc[i][j][c] += xp[j * CIN + c] * dv;
          }
        }
      }
    }
  }
  for (int i = 0; i < tap_rows; ++i)
    for (int j = 0; j < 3; ++j)
      for (int c = 0; c < CIN; ++c) {
        float* o = out + (((i0 + i) * 3 + j) * CIN + c) * g.cout + co0;
        Store(o, Load(o) + acc[i][j][c]);
      }
}

template <int CIN>
void WeightGradStemAllRows(const Geometry& g, const float* X, const float* DY, int64_t img0, int64_t img1,
                           int64_t co0, float* out) {
  for (int i0 = 0; i0 < 3; i0 += kStemRows<CIN>) WeightGradStem<CIN>(g, X, DY, img0, img1, co0, i0, out);
}

ffi::Error ConvWeightGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                              ffi::ResultBuffer<ffi::F32> dw, int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  const auto dyd = dy.dimensions();
  const Geometry g =
      MakeGeometry(x.dimensions(), dw->dimensions(), dyd[1], Width(dyd, dw->dimensions()[3]), sh, sw, pt, pl);
  if (g.cout % kChannelMultiple != 0) return ffi::Error::InvalidArgument("freqjax conv: C_out must be a multiple of 16");
  const float* X = x.typed_data();
  const float* DY = dy.typed_data();
  float* DW = dw->typed_data();
  const int64_t taps = g.kh * g.kw, tap_size = g.cin * g.cout;
  // Each (chunk, tap) task sums its images into its own partial (WeightGradChunks).
  const int64_t size = taps * tap_size, chunks = WeightGradChunks(g.n, size);
  std::vector<float> partial(chunks > 1 ? chunks * size : 0);
  float* sums = chunks > 1 ? partial.data() : DW;
  std::memset(sums, 0, sizeof(float) * chunks * size);
  if (g.kh == 3 && g.kw == 3 && g.cin <= 3) {  // a stem: one (chunk, output vector) task reads dy once
    const int64_t vecs = g.cout / kLanes;
    ParallelFor(pool, chunks * vecs, [&](int64_t t) {
      const int64_t chunk = t / vecs, co = t % vecs * kLanes;
      const int64_t img0 = g.n * chunk / chunks, img1 = g.n * (chunk + 1) / chunks;
      float* out = sums + chunk * size;
      if (g.cin == 3) WeightGradStemAllRows<3>(g, X, DY, img0, img1, co, out);
      if (g.cin == 2) WeightGradStemAllRows<2>(g, X, DY, img0, img1, co, out);
      if (g.cin == 1) WeightGradStemAllRows<1>(g, X, DY, img0, img1, co, out);
    });
    if (chunks > 1) SumChunks(pool, sums, chunks, size, DW);
    return ffi::Error::Success();
  }
  ParallelFor(pool, chunks * taps, [&](int64_t t) {
    const int64_t chunk = t / taps, tap = t % taps, i = tap / g.kw, j = tap % g.kw;
    const int64_t img0 = g.n * chunk / chunks, img1 = g.n * (chunk + 1) / chunks;
    float* out = sums + (chunk * taps + tap) * tap_size;
    // 6 x 4 blocks where 4 vectors remain (AVX-512): 1.1-1.7x faster than 8 x 2 at 64 output channels.
    ForChannelTiles(0, g.cout, [&](auto cb, int64_t co) {
      constexpr int CIB = TileRows(cb, cb == 1 ? 16 : (cb == 2 ? 8 : 6));
      WeightGradChannels<CIB, cb>(g, X, DY, img0, img1, i, j, 0, g.cin, co, out);
    });
  });
  if (chunks > 1) SumChunks(pool, sums, chunks, size, DW);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Winograd F(2x2, 3x3) for stride-1 3x3 convs with C_in and C_out multiples of 16 (Lavin & Gray
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

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
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

// Every handler takes (x, w or dy) -> out with the same attributes.
#define FREQJAX_CONV_BINDING                                                                             \
  ffi::Ffi::Bind()                                                                                       \
      .Ctx<ffi::ThreadPool>()                                                                            \
      .Arg<ffi::Buffer<ffi::F32>>()                                                                      \
      .Arg<ffi::Buffer<ffi::F32>>()                                                                      \
      .Ret<ffi::Buffer<ffi::F32>>()                                                                      \
      .Attr<int64_t>("stride_h")                                                                         \
      .Attr<int64_t>("stride_w")                                                                         \
      .Attr<int64_t>("pad_top")                                                                          \
      .Attr<int64_t>("pad_left")

XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxConvForward, ConvForwardImpl, FREQJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxWinogradForward, WinogradForwardImpl, FREQJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxWinogradWeightGrad, WinogradWeightGradImpl, FREQJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxConvWeightGrad, ConvWeightGradImpl, FREQJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxConvInputGrad, ConvInputGradImpl, FREQJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxDepthwiseForward, DepthwiseForwardImpl, FREQJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxDepthwiseWeightGrad, DepthwiseWeightGradImpl, FREQJAX_CONV_BINDING);

XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxChannelSums, ChannelSumsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(FreqjaxRepeatVector, RepeatVectorImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());

// What simd.h chose for this build (freqjax.ops.native.simd).
extern "C" const char* FreqjaxSimdName() { return FREQJAX_SIMD_NAME; }
extern "C" int FreqjaxSimdLanes() { return freqjax::kLanes; }
extern "C" int FreqjaxSimdRegisters() { return freqjax::kRegisters; }
