"""The native CPU conv kernels (freqjax.ops.native, used by freqjax.ops.conv under 'native') against XLA.

Dense and depthwise forward values and the backward pass for a fixed cotangent must agree with XLA's convolution to
a relative error <= 1e-5 (float32) for every kernel, stride and padding the models use, with
channel counts that reach each register-blocking variant of the kernels. The build is checked
too: cached per machine, switched off by FREQJAX_NATIVE=0, and a failed build falls back to the
XLA formulations with a warning rather than an error.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conv_cases import DENSE_CASES, DEPTHWISE_CASES, RTOL, primitives, rel_err, sym

from freqjax.models.layers import BatchNorm, Conv
from freqjax.ops import conv as cpu_conv
from freqjax.ops import conv_impl, native, resolve_conv_impl

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels need a C++ compiler")


# (kernel, stride, padding): the dense cases plus a 2x2 / 2 unpadded conv and padding larger than
# needed on one side.
CASES = [*DENSE_CASES, (2, 2, ((0, 0), (0, 0))), (3, 2, ((2, 2), (2, 0)))]
# (C_in, C_out): 16 / 32 / 80 output channels take the 1-, 2- and 4+1-vector blocks; C_in = 5 and
# 23 have no whole-vector input gradient (XLA formulation), and their weight gradients end in
# remainder blocks (23 = 3 x 6 + 3 + 2 input channels for the 4-vector blocks of 6).
CHANNELS = [(16, 32), (5, 16), (23, 80)]


def _forward_and_vjp(f, x, w, dy):
    y, vjp = jax.vjp(f, x, w)
    return (y, *vjp(dy))


# Every case with (16, 32); every other case with the other channel counts.
@pytest.mark.parametrize(
    ("k", "s", "pad", "c_in", "c_out"),
    [(*case, *CHANNELS[0]) for case in CASES] + [(*case, *ch) for ch in CHANNELS[1:] for case in CASES[::2]],
)
def test_native_conv_matches_xla(k, s, pad, c_in, c_out):
    rng = np.random.default_rng(100 * k + 10 * s + c_in)
    side = (16, 24) if k == 8 else (9, 29)  # 29: full 12-, 8- and 4-pixel blocks plus remainders
    x = jnp.asarray(rng.normal(size=(3, *side, c_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, c_in, c_out)), jnp.float32)
    y_shape = jax.eval_shape(lambda a, b: cpu_conv.xla_conv(a, b, (s, s), pad), x, w).shape
    dy = jnp.asarray(rng.normal(size=y_shape), jnp.float32)
    ours = _forward_and_vjp(lambda a, b: cpu_conv.conv(a, b, (s, s), pad, "native"), x, w, dy)
    ref = _forward_and_vjp(lambda a, b: cpu_conv.xla_conv(a, b, (s, s), pad), x, w, dy)
    for name, a, b in zip(("value", "dx", "dw"), ours, ref, strict=True):
        assert a.shape == b.shape, name
        assert rel_err(a, b) <= RTOL, name


@pytest.mark.parametrize("c_in", [1, 2, 3])
@pytest.mark.parametrize(("s", "pad", "c_out"), [(1, sym(3, 1), 16), (2, sym(3, 2), 32), (1, ((0, 0), (2, 1)), 16)])
def test_native_stem_weight_gradient_matches_xla(c_in, s, pad, c_out):
    """3x3 convs with 1-3 input channels (stems) take a weight-gradient kernel of their own."""
    rng = np.random.default_rng(10 * c_in + s)
    x = jnp.asarray(rng.normal(size=(5, 11, 13, c_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, c_in, c_out)), jnp.float32)
    y_shape = jax.eval_shape(lambda a, b: cpu_conv.xla_conv(a, b, (s, s), pad), x, w).shape
    dy = jnp.asarray(rng.normal(size=y_shape), jnp.float32)
    ref = jax.vjp(lambda b: cpu_conv.xla_conv(x, b, (s, s), pad), w)[1](dy)[0]
    ours = native.conv_weight_grad(x, dy, (3, 3), (s, s), (pad[0][0], pad[1][0]))
    assert ours.shape == ref.shape
    assert rel_err(ours, ref) <= RTOL


@pytest.mark.parametrize(("kernel", "strides", "pad"), DEPTHWISE_CASES)
def test_native_depthwise_matches_xla(kernel, strides, pad):
    rng = np.random.default_rng(sum(kernel) + 7 * strides[0] + strides[1])
    x = jnp.asarray(rng.normal(size=(3, 9, 29, 32)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, 1, 32)), jnp.float32)
    y_shape = jax.eval_shape(lambda a, b: cpu_conv.xla_conv(a, b, strides, pad, groups=32), x, w).shape
    dy = jnp.asarray(rng.normal(size=y_shape), jnp.float32)
    with conv_impl("native"):
        ours = _forward_and_vjp(lambda a, b: cpu_conv.depthwise(a, b, strides, pad), x, w, dy)
        assert "ffi_call" in primitives(lambda a, b: cpu_conv.depthwise(a, b, strides, pad), x, w)
    ref = _forward_and_vjp(lambda a, b: cpu_conv.xla_conv(a, b, strides, pad, groups=32), x, w, dy)
    for name, a, b in zip(("value", "dx", "dw"), ours, ref, strict=True):
        assert a.shape == b.shape, name
        assert rel_err(a, b) <= RTOL, name


# Winograd F(2x2, 3x3) (stride-1 3x3, C_in a multiple of 16): even and odd outputs (cropped tiles),
# one-sided, missing and oversized padding, blocks of 16 tiles that cross tile rows or end short,
# and 16 / 32 / 80 output channels (the 1-, 2- and 4+1-vector register blocks). The weight
# gradient's blocks of tiles span images: 20 images of 75 tiles make 8 batch chunks whose blocks of
# 128 tiles start and end inside images.
WINOGRAD_CASES = [
    (3, (8, 8), ((1, 1), (1, 1)), 16, 16),
    (20, (9, 29), ((1, 1), (1, 1)), 32, 32),
    (3, (7, 5), ((0, 0), (0, 0)), 16, 80),
    (3, (6, 11), ((2, 0), (0, 2)), 48, 16),
    (3, (1, 1), ((1, 1), (1, 1)), 16, 32),
]


@pytest.mark.parametrize(("batch", "side", "pad", "c_in", "c_out"), WINOGRAD_CASES)
def test_winograd_matches_xla(batch, side, pad, c_in, c_out):
    rng = np.random.default_rng(side[0] * side[1] + c_out)
    x = jnp.asarray(rng.normal(size=(batch, *side, c_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, c_in, c_out)), jnp.float32)
    ref, vjp = jax.vjp(lambda w_: cpu_conv.xla_conv(x, w_, (1, 1), pad), w)
    dy = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
    top_left = (pad[0][0], pad[1][0])
    ours = native.winograd_forward(x, w, top_left, ref.shape[1:3])
    assert ours.shape == ref.shape
    assert rel_err(ours, ref) <= RTOL
    dw = native.winograd_weight_grad(x, dy, top_left)
    assert dw.shape == w.shape
    assert rel_err(dw, vjp(dy)[0]) <= RTOL


def _specialised_pairs(macro: str) -> list[tuple[int, int]]:
    """The (C_in, C_out) pairs a FREQJAX_*_PAIRS macro of the kernel sources lists (following the
    macros it names), so that this test follows the source."""
    source = "\n".join(path.read_text() for path in native.included_files())
    defines = dict(re.findall(r"^#define (FREQJAX_\w+_PAIRS) (.+)$", source, re.M))

    def expand(name: str) -> list[int]:
        parts = [part.strip() for part in defines[name].split(",")]
        return [n for part in parts for n in (expand(part) if part in defines else [int(part)])]

    counts = expand(macro)
    return list(zip(counts[::2], counts[1::2], strict=True))


# Channel pairs the kernels compile with fixed counts (WithChannels): each such instantiation of
# the direct forward and input gradient (strides 1 and 2, with the weight gradient) and of
# Winograd's two kernels, on image sides that are not a multiple of the tile, against XLA.
WINOGRAD_PAIRS = _specialised_pairs("FREQJAX_WINOGRAD_PAIRS")
FIXED_PAIRS = sorted(set(_specialised_pairs("FREQJAX_DIRECT_PAIRS") + WINOGRAD_PAIRS))


@pytest.mark.parametrize(("c_in", "c_out"), FIXED_PAIRS)
@pytest.mark.parametrize("s", [1, 2])
def test_channel_specialised_kernels_match_xla(c_in, c_out, s):
    rng = np.random.default_rng(c_in * c_out + s)
    pad = sym(3, s)
    x = jnp.asarray(rng.normal(size=(2, 7, 9, c_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, c_in, c_out)), jnp.float32)
    ref, vjp = jax.vjp(lambda a, b: cpu_conv.xla_conv(a, b, (s, s), pad), x, w)
    dy = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
    ref_dx, ref_dw = vjp(dy)
    top_left = (pad[0][0], pad[1][0])
    assert rel_err(native.conv_forward(x, w, (s, s), top_left, ref.shape[1:3]), ref) <= RTOL
    assert rel_err(native.conv_weight_grad(x, dy, (3, 3), (s, s), top_left), ref_dw) <= RTOL
    if c_in % native.LANES == 0:
        assert rel_err(native.conv_input_grad(dy, w, x.shape, (s, s), top_left), ref_dx) <= RTOL
    if s == 1 and (c_in, c_out) in WINOGRAD_PAIRS:
        assert rel_err(native.winograd_forward(x, w, top_left, ref.shape[1:3]), ref) <= RTOL
        assert rel_err(native.winograd_weight_grad(x, dy, top_left), ref_dw) <= RTOL


def _ffi_targets(fn, *args) -> list[str]:
    hlo = jax.jit(fn).lower(*args).as_text()
    return sorted(set(re.findall(r"freqjax_\w+", hlo)))


# The Winograd forward's two schemes: F(4x4, 3x3) for C_in <= 32, F(2x2, 3x3) above; output sizes
# of every remainder modulo the 4x4 and 2x2 tiles (cropped tiles at the bottom and right edges).
@pytest.mark.parametrize("c_in", [16, 32, 48])
@pytest.mark.parametrize(("side", "pad"), [((6, 7), sym(3, 1)), ((5, 10), sym(3, 1)), ((11, 9), ((0, 0), (0, 0)))])
def test_winograd_forward_schemes_match_xla(c_in, side, pad):
    rng = np.random.default_rng(c_in + side[0])
    x = jnp.asarray(rng.normal(size=(3, *side, c_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, c_in, 16)), jnp.float32)
    ref = cpu_conv.xla_conv(x, w, (1, 1), pad)
    ours = native.winograd_forward(x, w, (pad[0][0], pad[1][0]), ref.shape[1:3])
    assert rel_err(ours, ref) <= RTOL


def test_winograd_serves_stride_one_3x3_convs():
    def grad_targets(c_in, side):
        x, w = jnp.ones((2, side, side, c_in)), jnp.ones((3, 3, c_in, 32))

        def loss(a, b):
            return jnp.sum(cpu_conv.conv(a, b, (1, 1), sym(3, 1), "native") ** 2)

        return _ffi_targets(jax.grad(loss, (0, 1)), x, w)

    # forward, dx (a stride-1 conv with C_in = 32) and dw by Winograd
    assert grad_targets(16, 16) == ["freqjax_winograd_forward", "freqjax_winograd_weight_grad"]
    assert grad_targets(32, 8) == ["freqjax_winograd_forward", "freqjax_winograd_weight_grad"]
    # C_in 5: the direct forward; dx (5 channels out) is the XLA formulation
    assert grad_targets(5, 16) == ["freqjax_conv_forward", "freqjax_conv_weight_grad"]
    x, w = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 32))
    assert _ffi_targets(lambda a, b: cpu_conv.conv(a, b, (2, 2), sym(3, 2), "native"), x, w) == ["freqjax_conv_forward"]


def test_native_runs_without_xla_convs_where_it_applies():
    x = jnp.ones((2, 8, 8, 16))
    layer = Conv(32, (3, 3), strides=2, padding=((1, 1), (1, 1)))
    params = layer.init(jax.random.key(0), x)

    def loss_and_grads(p, a):
        return jax.value_and_grad(lambda p_, a_: jnp.sum(layer.apply(p_, a_) ** 2), (0, 1))(p, a)

    with conv_impl("native"):
        prims = primitives(loss_and_grads, params, x)
        # forward, dx (every stride phase in one call), dw; no XLA convolution anywhere
        assert prims.count("ffi_call") == 3 and "conv_general_dilated" not in prims
        assert _ffi_targets(loss_and_grads, params, x) == [
            "freqjax_conv_forward",
            "freqjax_conv_input_grad",
            "freqjax_conv_weight_grad",
        ]
        odd = Conv(6, (3, 3), padding=((1, 1), (1, 1)))  # C_out 6: not whole vectors, 'cpu' formulation
        assert "ffi_call" not in primitives(lambda p: odd.apply(p, x), odd.init(jax.random.key(0), x))
        w8 = jnp.ones((3, 3, 1, 8))  # 8 depthwise channels: the shift-sum
        dw8 = primitives(lambda a: cpu_conv.depthwise(a, w8, (1, 1), ((1, 1), (1, 1))), x[..., :8])
        assert "ffi_call" not in dw8
    with conv_impl("cpu"):  # the XLA-op formulations only
        assert "ffi_call" not in primitives(loss_and_grads, params, x)


def test_native_is_the_default_on_one_avx2_or_avx512_cpu_device_only():
    # conftest gives this process 8 CPU devices: a sharded batch cannot be split across an FFI call
    assert jax.device_count() > 1 and resolve_conv_impl() == "cpu"
    code = "import jax; from freqjax.ops import resolve_conv_impl; print(jax.device_count(), resolve_conv_impl())"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    one = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert one.returncode == 0, one.stderr
    flags = set(Path("/proc/cpuinfo").read_text().split())
    timed = "avx512f" in flags or {"avx2", "fma"} <= flags  # the x86 targets timed against 'cpu' and 'xla'
    assert native.tuned_for_this_cpu() == timed
    assert one.stdout.split() == ["1", "native" if timed else "cpu"]


def test_weight_gradient_is_reproducible_and_vmaps():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(16, 8, 8, 16)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(16, 8, 8, 32)), jnp.float32)
    dw = jax.jit(lambda a, b: native.conv_weight_grad(a, b, (3, 3), (1, 1), (1, 1)))
    assert jnp.array_equal(dw(x, dy), dw(x, dy))  # fixed summation order, however threads split it
    dw_winograd = jax.jit(lambda a, b: native.winograd_weight_grad(a, b, (1, 1)))
    assert jnp.array_equal(dw_winograd(x, dy), dw_winograd(x, dy))
    w = jnp.asarray(rng.normal(size=(3, 3, 16, 32)), jnp.float32)
    per_example = jax.vmap(lambda a: cpu_conv.conv(a[None], w, (1, 1), ((1, 1), (1, 1)), "native")[0])(x)
    assert rel_err(per_example, cpu_conv.xla_conv(x, w, (1, 1), ((1, 1), (1, 1)))) <= RTOL


def test_native_functions_reject_bad_shapes_before_the_kernels():
    x, w = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 32))
    with pytest.raises(ValueError, match=r"conv_forward: w.shape = \(3, 3, 8, 32\).*x's 16 channels"):
        native.conv_forward(x, jnp.ones((3, 3, 8, 32)), (1, 1), (1, 1), (8, 8))
    with pytest.raises(ValueError, match=r"conv_forward: w.shape .*multiple of 16"):
        native.conv_forward(x, jnp.ones((3, 3, 16, 24)), (1, 1), (1, 1), (8, 8))
    with pytest.raises(ValueError, match=r"x.dtype = float16"):
        native.conv_forward(x.astype(jnp.float16), w, (1, 1), (1, 1), (8, 8))
    with pytest.raises(ValueError, match=r"winograd_forward: w.shape .*3x3"):
        native.winograd_forward(x, jnp.ones((5, 5, 16, 32)), (2, 2), (8, 8))
    with pytest.raises(ValueError, match=r"conv_input_grad: w.shape .*dy's 16 channels"):
        native.conv_input_grad(jnp.ones((2, 4, 4, 16)), w, x.shape, (2, 2), (1, 1))
    with pytest.raises(ValueError, match=r"conv_weight_grad: dy.shape = \(3, 8, 8, 32\).*batch 2"):
        native.conv_weight_grad(x, jnp.ones((3, 8, 8, 32)), (3, 3), (1, 1), (1, 1))
    with pytest.raises(ValueError, match=r"depthwise_forward: w.shape"):
        native.depthwise_forward(x, jnp.ones((3, 3, 32)), (1, 1), (1, 1), (8, 8))
    with pytest.raises(ValueError, match=r"channel_sums: b.shape"):
        native.channel_sums(x, x[:1])


def _ffi_operand_shapes(fn, *args) -> dict[str, list[str]]:
    """FFI target -> the operand shapes of its calls (e.g. '2x8x6x32'), from the lowered module."""
    hlo = jax.jit(fn).lower(*args).as_text()
    found: dict[str, list[str]] = {}
    for target, operands in re.findall(r"custom_call @(freqjax_\w+)\(.*?: \((.*?)\) ->", hlo):
        found.setdefault(target, []).extend(re.findall(r"tensor<([\dx]+)xf32>", operands))
    return found


def test_packed_view_of_16_channel_activations():
    x = jnp.arange(2 * 3 * 4 * 16, dtype=jnp.float32).reshape(2, 3, 4, 16)
    view = native.packed(x)
    assert view.shape == (2, 3, 2, 32)  # pixel pairs in one row, the same bytes in the same order
    np.testing.assert_array_equal(np.asarray(view).ravel(), np.asarray(x).ravel())
    for shape in [(2, 3, 5, 16), (2, 3, 4, 32), (2, 3, 4, 3), (6, 16)]:  # odd width, other channels, not NHWC
        assert not native.packs(shape)
        assert native.packed(jnp.zeros(shape)).shape == shape


def test_repeat_vector_values_gradient_and_errors():
    v = jnp.arange(16, dtype=jnp.float32)
    np.testing.assert_array_equal(native.repeat_vector(v, 3), np.tile(np.arange(16), 3))
    g = jax.grad(lambda a: jnp.sum(native.repeat_vector(a, 2) * jnp.arange(32.0)))(v)
    np.testing.assert_array_equal(g, np.arange(16) + np.arange(16, 32))  # the copies' gradients summed
    with pytest.raises(ValueError, match=r"repeat_vector: times = 0 is not valid"):
        native.repeat_vector(v, 0)
    with pytest.raises(ValueError, match=r"repeat_vector: v = float32\[2, 8\] is not valid; a float32 vector"):
        native.repeat_vector(v.reshape(2, 8), 2)


# Every dense case with 16-channel activations of even width, which the kernels take packed: the
# input (C_in = 16) of the forward and the weight gradient, the output gradient (C_out = 16) of both
# gradients where the output width is even too (all cases but the 8x8 / 8 front: 24 / 8 = 3 pixels).
@pytest.mark.parametrize(("k", "s", "pad"), CASES)
@pytest.mark.parametrize(("c_in", "c_out"), [(16, 16), (16, 48), (32, 16)])
def test_packed_operands_match_xla(k, s, pad, c_in, c_out):
    rng = np.random.default_rng(10 * k + s + c_in + c_out)
    x = jnp.asarray(rng.normal(size=(2, 16, 24, c_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, c_in, c_out)), jnp.float32)
    y_shape = jax.eval_shape(lambda a, b: cpu_conv.xla_conv(a, b, (s, s), pad), x, w).shape
    dy = jnp.asarray(rng.normal(size=y_shape), jnp.float32)

    def native_vjp(a, b, g):
        return _forward_and_vjp(lambda a_, b_: cpu_conv.conv(a_, b_, (s, s), pad, "native"), a, b, g)

    ours = native_vjp(x, w, dy)
    ref = _forward_and_vjp(lambda a, b: cpu_conv.xla_conv(a, b, (s, s), pad), x, w, dy)
    for name, a, b in zip(("value", "dx", "dw"), ours, ref, strict=True):
        assert a.shape == b.shape, name
        assert rel_err(a, b) <= RTOL, name
    operands = [shape for shapes in _ffi_operand_shapes(native_vjp, x, w, dy).values() for shape in shapes]
    if c_in == 16:
        assert "2x16x12x32" in operands  # x packed
    if c_out == 16 and y_shape[2] % 2 == 0:
        assert f"2x{y_shape[1]}x{y_shape[2] // 2}x32" in operands  # dy packed


def test_build_is_cached_per_machine(tmp_path, monkeypatch):
    # A one-line source: the build and cache logic is the kernels' (build() compiles any source), in
    # a second rather than a minute; the real kernels are built by the first test that uses them.
    source = tmp_path / "tiny.cc"
    source.write_text('extern "C" int freqjax_tiny() { return 1; }\n')
    cache = tmp_path / "cache"
    monkeypatch.setenv("FREQJAX_CACHE_DIR", str(cache))
    path = native.build(source=source)
    assert path.parent == cache and path.suffix == ".so"
    mtime = path.stat().st_mtime_ns
    assert native.build(source=source) == path and path.stat().st_mtime_ns == mtime  # cached, not rebuilt
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary files left
    source.write_text('extern "C" int freqjax_tiny() { return 2; }\n')
    assert native.build(source=source) != path  # another source, another build


def test_build_target_is_the_requested_one():
    """The loaded build's vector ISA (simd.h's choice, reported by the library) is the one
    $FREQJAX_NATIVE_TARGET asks for (test_native_targets.py runs this file's checks per target)."""
    target = os.environ.get("FREQJAX_NATIVE_TARGET", "native")
    flags = set(Path("/proc/cpuinfo").read_text().split())
    if target == "native":
        expected = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "neon" if "asimd" in flags else ""
    else:
        expected = {"x86-64-v3": "avx2", "generic": "generic"}[target]
    lanes = {"avx512": 16, "avx2": 8, "neon": 4, "generic": 4}
    if expected:
        assert native.simd().startswith(f"{expected}: {lanes[expected]} lanes")
    with pytest.raises(ValueError, match=r"unknown native kernel target 'sse9'"):
        native.build(target="sse9")


def test_build_cache_key_hashes_included_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FREQJAX_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.h").write_text("constexpr int kInner = 1;\n")
    (tmp_path / "outer.h").write_text('#pragma once\n#include "sub/inner.h"\n')
    source = tmp_path / "tiny.cc"
    source.write_text('#include "outer.h"\n#include <vector>\nextern "C" int freqjax_tiny() { return kInner; }\n')
    assert native.included_files(source) == [source, tmp_path / "outer.h", tmp_path / "sub" / "inner.h"]
    first = native.build(source=source)
    (tmp_path / "sub" / "inner.h").write_text("constexpr int kInner = 2;\n")  # a header two levels down
    assert native.build(source=source) != first
    # the kernels: the translation unit and every kernel family it includes, simd.h among them
    names = {path.name for path in native.included_files()}
    assert {"conv_kernels.cc", "simd.h", "common.h", "dense.h", "winograd.h", "depthwise.h", "batchnorm.h"} <= names


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, check=False
    )


FALLBACK = """
import jax, jax.numpy as jnp
from freqjax.ops import native
from freqjax.ops import conv as cpu_conv
x, w = jnp.ones((2, 6, 6, 16)), jnp.ones((3, 3, 16, 16))
y = cpu_conv.conv(x, w, (1, 1), ((1, 1), (1, 1)))
assert float(y[0, 2, 2, 0]) == 144.0
print("available", native.available())
"""


def test_disabled_or_failed_build_falls_back_to_xla_formulations(tmp_path):
    off = _run(FALLBACK, FREQJAX_NATIVE="0")
    assert off.returncode == 0, off.stderr
    assert "available False" in off.stdout and "unavailable" not in off.stderr
    broken = _run(FALLBACK, CXX="false", FREQJAX_CACHE_DIR=str(tmp_path))  # a "compiler" that fails
    assert broken.returncode == 0, broken.stderr
    assert "available False" in broken.stdout
    assert "native CPU conv kernels unavailable" in broken.stderr and "failed" in broken.stderr
    missing = _run(FALLBACK, CXX="no-such-compiler-xyz", FREQJAX_CACHE_DIR=str(tmp_path))
    assert missing.returncode == 0 and "is not on PATH" in missing.stderr


def test_mac_counts_do_not_depend_on_the_conv_impl():
    from freqjax.models import create_model
    from freqjax.models.counting import count_macs

    model = create_model("cifar_resnet8", num_classes=10)
    counts = {}
    for impl in ("native", "cpu", "xla"):
        with conv_impl(impl):
            counts[impl] = count_macs(model, (32, 32, 3))
    assert counts == {impl: 12_501_632 for impl in counts}  # native FFI calls are counted as convs


# ----------------------------------------------------------------------------- BatchNorm sums


@pytest.mark.parametrize("shape", [(4, 9, 29, 16), (3, 5, 7, 144), (1, 1, 1, 32), (7, 48)])
def test_channel_sums_match_float64(shape):
    rng = np.random.default_rng(len(shape) + shape[-1])
    a = rng.normal(size=shape).astype(np.float32) + 3.0
    b = rng.normal(size=shape).astype(np.float32)
    ours = np.asarray(native.channel_sums(jnp.asarray(a), jnp.asarray(b)))
    axes = tuple(range(len(shape) - 1))
    ref = np.stack([np.sum(a.astype(np.float64), axes), np.sum(a.astype(np.float64) * b, axes)])
    assert ours.shape == (2, shape[-1])
    assert np.max(np.abs(ours - ref)) <= 1e-6 * np.max(np.abs(ref))


def _bn_step(channels, width=7):
    """Train-mode BatchNorm + ReLU: (output, new batch_stats, gradients wrt x, scale, bias)."""
    bn = BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    rng = np.random.default_rng(channels)
    x = jnp.asarray(rng.normal(size=(6, 5, width, channels)) * 2.0 + 0.5, jnp.float32)
    variables = bn.init(jax.random.key(0), x)
    params = {"scale": jnp.linspace(0.5, 1.5, channels), "bias": jnp.linspace(-1.0, 1.0, channels)}
    variables = {**variables, "params": params}
    cot = jnp.asarray(rng.normal(size=x.shape), jnp.float32)

    def f(x_, params):
        y, updates = bn.apply({**variables, "params": params}, x_, mutable=["batch_stats"])
        return jnp.sum(jax.nn.relu(y) * cot), (y, updates["batch_stats"])

    fn = jax.jit(jax.grad(f, (0, 1), has_aux=True))
    return fn, (x, variables["params"])


# 48 channels; 16 channels at an even width, which BatchNorm takes in the packed view with its
# per-channel vectors tiled natively (freqjax.native.packed, repeat_vector).
@pytest.mark.parametrize(("channels", "width"), [(48, 7), (16, 8)])
def test_native_batch_norm_matches_flax_formulation(channels, width):
    fn, args = _bn_step(channels, width)
    with conv_impl("native"):
        (dx, dp), (y, stats) = fn(*args)
        targets = _ffi_targets(fn, *args)
        assert "freqjax_channel_sums" in targets
        assert ("freqjax_repeat_vector" in targets) == native.packs(args[0].shape)
    with conv_impl("cpu"):  # flax's statistics and autodiff's backward
        (dx_ref, dp_ref), (y_ref, stats_ref) = fn(*args)
        assert "freqjax_channel_sums" not in _ffi_targets(fn, *args)
    for name, a, b in [
        ("y", y, y_ref),
        ("mean", stats["mean"], stats_ref["mean"]),
        ("var", stats["var"], stats_ref["var"]),
        ("dx", dx, dx_ref),
        ("dscale", dp["scale"], dp_ref["scale"]),
        ("dbias", dp["bias"], dp_ref["bias"]),
    ]:
        assert rel_err(a, b) <= RTOL, name


def test_native_batch_norm_needs_whole_vectors_of_channels():
    fn, args = _bn_step(24)  # 24 channels: flax's formulation even under 'native'
    with conv_impl("native"):
        assert "freqjax_channel_sums" not in _ffi_targets(fn, *args)
