// Vector width and register tiles of the native kernels, from the compile target.
//
// The kernels are written once over `Vec` (a GCC/Clang vector extension of kLanes floats) and
// register tiles counted in vectors; this header is the only place that knows the instruction
// set. Targets, by the compiler's predefined macros:
//
//   __AVX512F__                  16 lanes (zmm), 32 vector registers
//   __AVX2__ / __FMA__ / __AVX__  8 lanes (ymm), 16 vector registers
//   __ARM_NEON                    4 lanes (q),   32 vector registers
//   anything else (generic)       4 lanes,       16 vector registers (SSE2 on x86-64; elsewhere
//                                 the compiler lowers the vectors to whatever it has, or scalars)
//
// FREQJAX_SIMD_GENERIC (-DFREQJAX_SIMD_GENERIC) forces the generic row whatever the target; the
// tests build it to check that the kernels do not depend on a particular width.
//
// A vector wider than the hardware's (the kernels' 16-float vectors before this header, on AVX2)
// is split by the compiler into two or more registers per value, so a tile sized for 32 registers
// then needs 48 or more and spills: the tiles below are sized from kRegisters instead.

#pragma once

#include <algorithm>

namespace freqjax {

#if defined(FREQJAX_SIMD_GENERIC)
#define FREQJAX_SIMD_LANES 4
#define FREQJAX_SIMD_REGISTERS 16
#define FREQJAX_SIMD_NAME "generic"
#elif defined(__AVX512F__)
#define FREQJAX_SIMD_LANES 16
#define FREQJAX_SIMD_REGISTERS 32
#define FREQJAX_SIMD_NAME "avx512"
#elif defined(__AVX2__) || defined(__FMA__) || defined(__AVX__)
#define FREQJAX_SIMD_LANES 8
#define FREQJAX_SIMD_REGISTERS 16
#define FREQJAX_SIMD_NAME "avx2"
#elif defined(__ARM_NEON)
#define FREQJAX_SIMD_LANES 4
#define FREQJAX_SIMD_REGISTERS 32
#define FREQJAX_SIMD_NAME "neon"
#else
#define FREQJAX_SIMD_LANES 4
#define FREQJAX_SIMD_REGISTERS 16
#define FREQJAX_SIMD_NAME "generic"
#endif

// Floats per vector and architectural vector registers.
constexpr int kLanes = FREQJAX_SIMD_LANES;
constexpr int kRegisters = FREQJAX_SIMD_REGISTERS;

typedef float Vec __attribute__((vector_size(FREQJAX_SIMD_LANES * sizeof(float))));
typedef float VecU __attribute__((vector_size(FREQJAX_SIMD_LANES * sizeof(float)), aligned(4)));  // unaligned

inline Vec Load(const float* p) { return *reinterpret_cast<const VecU*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<VecU*>(p) = v; }

// Channel counts the kernels take are multiples of kChannelMultiple on every target (the Python
// side's freqjax.ops.native.LANES): one contract for every build, a whole number of vectors on each.
constexpr int kChannelMultiple = 16;
static_assert(kChannelMultiple % kLanes == 0, "a channel block must be whole vectors");

// Cache line in floats: scratch rows are padded by one so that power-of-two strides do not fall
// into the same few L1 sets.
constexpr int kLineFloats = 16;

// Accumulator vectors a register tile may keep live: three quarters of the registers, the rest
// for the tile's operand vectors and broadcasts (24 of 32 zmm on AVX-512, 12 of 16 ymm on AVX2).
constexpr int kAccumulators = kRegisters * 3 / 4;

// Independent FMA chains to keep in flight: FMA latency (4 cycles) x FMA ports (2) on current
// x86 and Arm cores. Small tiles get several accumulator sets to reach it.
constexpr int kFmaChains = 8;

// Output-channel vectors of the widest tile (4 on 32 registers, 2 on 16): at least 6 rows of it fit.
constexpr int kMaxTileVecs = kAccumulators / 6;

// Rows (pixels, tiles or input channels) of a tile of `vecs` output vectors: as many as the
// accumulator budget holds, at most `cap` (the largest that measured faster where registers allow;
// each call site gives its own).
constexpr int TileRows(int vecs, int cap) { return std::max(1, std::min(cap, kAccumulators / vecs)); }

}  // namespace freqjax
