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
// otherwise. Zero padding is handled by bounds, never by a padded copy. The input gradient is the
// forward kernel applied per stride phase: for strided dense convs all phases in one call writing
// into dx (ConvInputGradImpl), else from the Python side (freqjax/ops/conv.py).
//
// Vectors are GCC/Clang vector extensions whose width, like the register tiles, comes from the
// compile target (simd.h): one source compiles to AVX-512, AVX2, NEON or generic code for
// whatever -march the build chose. Work is split over XLA's intra-op thread pool; the calling
// thread takes part, and results do not depend on how the work is split (each output element is
// summed in a fixed order by one task).
//
// One translation unit (one compiler call, freqjax/ops/native/build.py) of the kernel families,
// each in its own header: simd.h (vector type and register tiles of the target), common.h (thread
// pool loop, geometry, channel tiles), dense.h (direct convs), winograd.h, depthwise.h,
// batchnorm.h; this file binds them to the XLA FFI.

#include "batchnorm.h"
#include "common.h"
#include "dense.h"
#include "depthwise.h"
#include "simd.h"
#include "winograd.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

using namespace freqjax;  // the *Impl functions of the kernel families

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
