"""DCT input transform of "Rethinking FUN: Frequency-Domain Utilization Networks" (Goldberg et al.), in jax.numpy.

Layout: an RGB image of H x W pixels becomes H/8 x W/8 x 192 channels,
``[Y 0..63, Cb 0..63, Cr 0..63]``; inside each plane channel ``8 * v + u`` holds the orthonormal
DCT-II coefficient of vertical frequency ``v`` and horizontal frequency ``u`` (libjpeg's natural
raster order, not zigzag). Values are raw coefficients of the level-shifted planes (pixel - 128),
so the Y DC lies in [-1024, 1016], exactly what libjpeg stores for a quality-100 JPEG.

Every function takes any leading batch dimensions, works under ``jit`` and ``vmap`` and returns
float32 unless ``dtype`` asks for another float type (bfloat16 for mixed-precision steps). The
arithmetic always runs in float32: coefficients reach +-1024 and bfloat16 would round the DC to
steps of 4 before the result is even stored.

Speed (measured with ``python -m freqjax.bench dct``): on a CPU XLA runs elementwise loops at
memory speed but vectorises 8-tap sums and small-K matrix products poorly, so ``rgb_to_dct`` is
shaped as three passes: one loop that reads the uint8 image once and writes colour-converted
pixels already in 8x8-block order, one 64x64 GEMM per plane for the 2-D DCT (a GEMM beats
``jax.scipy.fft.dct`` and separable 8-point products here), and one pad-and-add loop that
writes the 192-channel result. The figures are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BLOCK",
    "CHANNELS",
    "TABLE7_KEEP",
    "ZIGZAG",
    "block_dct",
    "block_idct",
    "dct_from_jpeg",
    "dct_matrix",
    "dct_to_rgb",
    "keep_lowest",
    "lowest_channels",
    "reference_dct",
    "rgb_to_dct",
    "rgb_to_ycbcr",
    "select_lowest",
    "ycbcr_to_rgb",
    "zigzag_order",
]

Chroma = Literal["420", "444"]

BLOCK = 8
"""Side of a JPEG DCT block in pixels."""

CHANNELS = 3 * BLOCK * BLOCK
"""Channels of the DCT input: 64 frequencies for each of Y, Cb and Cr."""

# JFIF full-range RGB -> YCbCr (the +128 chroma offset is added separately).
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float64,
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
_CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])
_LEVEL_SHIFT = 128.0

ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
     20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
     58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63],
    dtype=np.int32,
)  # fmt: skip
"""``ZIGZAG[k]`` is the raster channel (``8 * v + u``) of the k-th lowest frequency."""

TABLE7_KEEP: tuple[tuple[int, int, int], ...] = (
    (64, 64, 64),
    (64, 12, 12),
    (44, 10, 10),
    (32, 8, 8),
    (14, 5, 5),
)
"""(Y, Cb, Cr) frequencies kept in the FUN paper's input-compression study (Table 7)."""


def dct_matrix(n: int = BLOCK) -> np.ndarray:
    """The orthonormal DCT-II matrix ``D`` (float64): ``D @ x`` is ``scipy.fft.dct(x, norm='ortho')``.

    Args:
        n: transform length, a positive integer.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d


# (64 out [8v+u], 64 in [8y+x]): the 2-D 8x8 DCT of a raster-flattened block as one matrix.
_DCT2 = np.kron(dct_matrix(), dct_matrix())


def zigzag_order(k: int) -> np.ndarray:
    """Raster channels (``8 * v + u``) of the ``k`` lowest frequencies in zigzag order.

    Args:
        k: how many frequencies, 0..64.
    """
    _check_count("k", k)
    return ZIGZAG[:k].copy()


# ----------------------------------------------------------------------------- validation


def _check_count(name: str, k: object) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 <= k <= 64:
        raise ValueError(f"{name} must be an integer number of frequencies in 0..64, got {k!r}")


def _check_chroma(chroma: object) -> None:
    if chroma not in ("420", "444"):
        raise ValueError(f"chroma must be '420' or '444', got {chroma!r}")


def _check_real(name: str, x: jax.typing.ArrayLike) -> None:
    dtype = np.dtype(getattr(x, "dtype", None) or np.asarray(x).dtype)
    if dtype == np.bool_ or not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == jnp.bfloat16
    ):
        raise TypeError(
            f"{name} must have an integer or real floating dtype (uint8, float32, bfloat16, ...), got dtype {dtype}"
        )


def _check_out_dtype(dtype: object) -> jnp.dtype:
    try:
        dt = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype must be a floating dtype such as float32 or bfloat16, got {dtype!r}") from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype such as float32 or bfloat16, got {dtype!r}")
    return dt


def _check_image(images: jax.typing.ArrayLike, chroma: Chroma, name: str = "images") -> None:
    _check_chroma(chroma)
    _check_real(name, images)
    shape = np.shape(images)
    if len(shape) < 3 or shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., H, W, 3) with 3 colour channels, got shape {shape}")
    mult = 16 if chroma == "420" else 8
    h, w = shape[-3], shape[-2]
    if h % mult or w % mult or h == 0 or w == 0:
        raise ValueError(
            f"{name} height and width must be positive multiples of {mult} for chroma={chroma!r} "
            f"(8x8 blocks{' of 2x-subsampled chroma' if mult == 16 else ''}), got H={h}, W={w}; "
            "crop or pad the images first"
        )


def _check_scale(images: jax.typing.ArrayLike, name: str = "images") -> None:
    # Float images on the 0..1 scale would pass as near-black 0..255 images: a silent wrong input.
    # Only concrete values can be checked (under jit the caller's tracer is skipped).
    dtype = np.dtype(getattr(images, "dtype", None) or np.asarray(images).dtype)
    if not (np.issubdtype(dtype, np.floating) or dtype == jnp.bfloat16) or np.size(images) == 0:
        return
    try:
        peak = float(np.max(np.asarray(images, np.float32)))
    except jax.errors.TracerArrayConversionError:
        return
    if 0.0 < peak <= 1.0:
        raise ValueError(
            f"{name} are floats with maximum {peak:g}: they look like the 0..1 scale, but the DCT input takes "
            "RGB on the 0..255 scale; multiply by 255 first"
        )


def _check_coeffs(coeffs: jax.typing.ArrayLike, name: str = "coeffs") -> None:
    _check_real(name, coeffs)
    shape = np.shape(coeffs)
    if len(shape) < 1 or shape[-1] != CHANNELS:
        raise ValueError(f"{name} must have {CHANNELS} channels in its last axis, got shape {shape}")


# ----------------------------------------------------------------------------- colour


def rgb_to_ycbcr(images: jax.typing.ArrayLike, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """JFIF full-range RGB -> YCbCr on the 0..255 scale (chroma centred on 128).

    Args:
        images: (..., 3) RGB values on the 0..255 scale, any integer or float dtype.
        dtype: floating dtype of the result.

    Returns:
        (..., 3) array ``[Y, Cb, Cr]``.
    """
    _check_real("images", images)
    if np.shape(images)[-1:] != (3,):
        raise ValueError(f"images must have 3 channels in the last axis, got shape {np.shape(images)}")
    dt = _check_out_dtype(dtype)
    x = jnp.asarray(images).astype(jnp.float32)
    return _colour(x, _RGB_TO_YCBCR, _CHROMA_OFFSET).astype(dt)


def ycbcr_to_rgb(ycbcr: jax.typing.ArrayLike, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Inverse of :func:`rgb_to_ycbcr` (not clipped to 0..255).

    Args:
        ycbcr: (..., 3) ``[Y, Cb, Cr]`` values, chroma centred on 128.
        dtype: floating dtype of the result.
    """
    _check_real("ycbcr", ycbcr)
    if np.shape(ycbcr)[-1:] != (3,):
        raise ValueError(f"ycbcr must have 3 channels in the last axis, got shape {np.shape(ycbcr)}")
    dt = _check_out_dtype(dtype)
    x = jnp.asarray(ycbcr).astype(jnp.float32) - _CHROMA_OFFSET.astype(np.float32)
    return _colour(x, _YCBCR_TO_RGB, np.zeros(3)).astype(dt)


def _colour(x: jax.Array, matrix: np.ndarray, offset: np.ndarray) -> jax.Array:
    # Written as explicit multiply-adds: XLA turns a (..., 3) @ (3, 3) matmul into a slow
    # dot with K=3, while elementwise arithmetic fuses into one memory-speed loop.
    m = matrix.astype(np.float32)
    planes = [m[r, 0] * x[..., 0] + m[r, 1] * x[..., 1] + m[r, 2] * x[..., 2] + np.float32(offset[r]) for r in range(3)]
    return jnp.stack(planes, axis=-1)


# ----------------------------------------------------------------------------- block DCT


def _to_blocks(planes: jax.Array) -> jax.Array:
    """(..., H, W) -> (..., H/8, W/8, 64) raster-flattened 8x8 blocks."""
    *lead, h, w = planes.shape
    b = planes.reshape(*lead, h // BLOCK, BLOCK, w // BLOCK, BLOCK)
    b = jnp.swapaxes(b, -3, -2)
    return b.reshape(*lead, h // BLOCK, w // BLOCK, BLOCK * BLOCK)


def _channel_blocks(planes: jax.Array) -> jax.Array:
    """(n, H, W, k) -> (n, H/8, W/8, k, 64): raster-flattened 8x8 blocks, planes before pixels.

    With this order the 64x64 GEMM's result already is the stacked-planes channel layout, so no
    slice or concatenate pass follows it (each would be a full extra pass over memory on CPU).
    """
    n, h, w, k = planes.shape
    b = planes.reshape(n, h // BLOCK, BLOCK, w // BLOCK, BLOCK, k).transpose(0, 1, 3, 5, 2, 4)
    return b.reshape(n, h // BLOCK, w // BLOCK, k, BLOCK * BLOCK)


def _from_blocks(blocks: jax.Array) -> jax.Array:
    """(..., H/8, W/8, 64) -> (..., H, W)."""
    *lead, hb, wb, _ = blocks.shape
    b = blocks.reshape(*lead, hb, wb, BLOCK, BLOCK)
    b = jnp.swapaxes(b, -3, -2)
    return b.reshape(*lead, hb * BLOCK, wb * BLOCK)


def _apply64(blocks: jax.Array, matrix: np.ndarray) -> jax.Array:
    """Multiply the last (64) axis by ``matrix`` as one GEMM with full float32 precision."""
    m = jnp.asarray(matrix.T, dtype=jnp.float32)
    return jnp.matmul(blocks, m, precision=jax.lax.Precision.HIGHEST)


def block_dct(planes: jax.typing.ArrayLike, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Orthonormal 2-D DCT-II of every 8x8 block.

    Args:
        planes: (..., H, W) real values, H and W multiples of 8.
        dtype: floating dtype of the result.

    Returns:
        (..., H/8, W/8, 64) coefficients, channel ``8 * v + u`` (raster order). Each block equals
        ``scipy.fft.dctn(block, norm='ortho')`` flattened row-major.
    """
    _check_real("planes", planes)
    shape = np.shape(planes)
    if len(shape) < 2 or shape[-2] % BLOCK or shape[-1] % BLOCK or 0 in shape[-2:]:
        raise ValueError(f"planes must have shape (..., H, W) with H, W positive multiples of 8, got {shape}")
    dt = _check_out_dtype(dtype)
    x = jnp.asarray(planes).astype(jnp.float32)
    return _apply64(_to_blocks(x), _DCT2).astype(dt)


def block_idct(coeffs: jax.typing.ArrayLike, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Inverse of :func:`block_dct`: (..., H/8, W/8, 64) -> (..., H, W).

    Args:
        coeffs: block coefficients in raster order, last axis of size 64.
        dtype: floating dtype of the result.
    """
    _check_real("coeffs", coeffs)
    shape = np.shape(coeffs)
    if len(shape) < 3 or shape[-1] != BLOCK * BLOCK:
        raise ValueError(f"coeffs must have shape (..., H/8, W/8, 64), got {shape}")
    dt = _check_out_dtype(dtype)
    x = jnp.asarray(coeffs).astype(jnp.float32)
    # The DCT matrix is orthogonal, so its transpose is the inverse.
    return _from_blocks(_apply64(x, _DCT2.T)).astype(dt)


# ----------------------------------------------------------------------------- 192-channel input


def rgb_to_dct(images: jax.typing.ArrayLike, chroma: Chroma = "420", dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """RGB images -> the FUN paper's 192-channel DCT input.

    The FUN reference pipeline: JFIF YCbCr, 2x2 box-averaged chroma (``'420'``) or
    full chroma (``'444'``), level shift by 128, orthonormal 8x8 DCT-II per block, chroma
    coefficient maps repeated 2x2 back to the luma grid, planes stacked ``[Y, Cb, Cr]``.

    Args:
        images: (..., H, W, 3) RGB on the 0..255 scale (uint8 or any real dtype). H and W must be
            multiples of 16 for ``'420'`` and of 8 for ``'444'``. Float images whose maximum is
            in (0, 1] are rejected as the 0..1 scale (checked outside ``jit`` only).
        chroma: ``'420'`` (JPEG's usual subsampling, the paper's setting) or ``'444'``.
        dtype: floating dtype of the result (float32, or bfloat16 for mixed precision).

    Returns:
        (..., H/8, W/8, 192) coefficients; a 224x224 image gives 28x28x192.

    Raises:
        TypeError: non-numeric ``images`` or non-float ``dtype``.
        ValueError: wrong channel count, H/W not a multiple of 16 (``'420'``) or 8 (``'444'``),
            an unknown ``chroma``, or float images on the 0..1 scale.
    """
    _check_image(images, chroma)
    _check_scale(images)
    dt = _check_out_dtype(dtype)
    x = jnp.asarray(images)
    *lead, h, w, _ = x.shape
    # Kept in the input dtype (usually uint8) and converted inside each consumer: a float32 copy
    # shared by the luma and chroma loops is materialised by XLA, which cost ~40 % of the time.
    x = x.reshape(-1, h, w, 3)
    m = _RGB_TO_YCBCR.astype(np.float32)

    def plane(r: int, p: jax.Array) -> jax.Array:
        p = p.astype(jnp.float32)
        return m[r, 0] * p[..., 0] + m[r, 1] * p[..., 1] + m[r, 2] * p[..., 2]

    # Level shift: Y - 128; the chroma offsets +128 - 128 cancel.
    if chroma == "444":
        planes = jnp.stack([plane(0, x) - _LEVEL_SHIFT, plane(1, x), plane(2, x)], axis=-1)
        out = _apply64(_channel_blocks(planes), _DCT2).reshape(-1, h // BLOCK, w // BLOCK, CHANNELS)
    else:
        # 2x2 box average as four strided slices: XLA fuses these into the colour loop, whereas a
        # reshape + sum becomes a separate reduction that is ~5x slower on CPU.
        f32 = jnp.float32
        s = (
            x[:, 0::2, 0::2].astype(f32)
            + x[:, 1::2, 0::2].astype(f32)
            + x[:, 0::2, 1::2].astype(f32)
            + x[:, 1::2, 1::2].astype(f32)
        )
        cp = jnp.stack([plane(1, s), plane(2, s)], axis=-1) * 0.25  # (n, H/2, W/2, 2)
        n, hc, wc = x.shape[0], h // 16, w // 16
        y = _apply64(_channel_blocks((plane(0, x) - _LEVEL_SHIFT)[..., None]), _DCT2).reshape(n, 2 * hc, 2 * wc, 64)
        c = _apply64(_channel_blocks(cp), _DCT2).reshape(n, hc, wc, 128)
        c = jnp.broadcast_to(c[:, :, None, :, None], (n, hc, 2, wc, 2, 128)).reshape(n, 2 * hc, 2 * wc, 128)
        # pad + add assembles the 192 channels in one fused loop; concatenate is a separate,
        # slower copy on XLA CPU.
        zero = ((0, 0),) * 3
        out = jnp.pad(y, (*zero, (0, 128))) + jnp.pad(c, (*zero, (64, 0)))
    return out.astype(dt).reshape(*lead, h // BLOCK, w // BLOCK, CHANNELS)


def dct_to_rgb(coeffs: jax.typing.ArrayLike, chroma: Chroma = "420", dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Inverse of :func:`rgb_to_dct`: (..., H/8, W/8, 192) -> (..., H, W, 3) RGB, 0..255 scale.

    For ``'420'`` the four repeated copies of each chroma block are averaged (the least-squares
    inverse of the repetition) and the half-resolution chroma planes are upsampled by pixel
    repetition. The result is not clipped or rounded: use ``jnp.clip(x, 0, 255)`` for pictures.

    Args:
        coeffs: DCT input in the reference layout; for ``'420'`` H/8 and W/8 must be even.
        chroma: the subsampling the coefficients were made with.
        dtype: floating dtype of the result.
    """
    _check_chroma(chroma)
    _check_coeffs(coeffs)
    dt = _check_out_dtype(dtype)
    shape = np.shape(coeffs)
    if len(shape) < 3:
        raise ValueError(f"coeffs must have shape (..., H/8, W/8, 192), got {shape}")
    *lead, hb, wb, _ = shape
    if chroma == "420" and (hb % 2 or wb % 2):
        raise ValueError(f"coeffs for chroma='420' need an even number of block rows and columns, got {hb}x{wb}")
    x = jnp.asarray(coeffs).astype(jnp.float32).reshape(-1, hb, wb, CHANNELS)
    n = x.shape[0]
    y = _from_blocks(_apply64(x[..., :64], _DCT2.T)) + _LEVEL_SHIFT
    c = x[..., 64:]
    if chroma == "420":
        c = c.reshape(n, hb // 2, 2, wb // 2, 2, 128).mean(axis=(2, 4))
    c = jnp.stack([c[..., :64], c[..., 64:]], axis=1)  # (n, 2, hb', wb', 64)
    c = _from_blocks(_apply64(c, _DCT2.T))  # (n, 2, H', W')
    if chroma == "420":
        c = jnp.repeat(jnp.repeat(c, 2, axis=-2), 2, axis=-1)
    ycc = jnp.stack([y, c[:, 0] + 128.0, c[:, 1] + 128.0], axis=-1)
    rgb = _colour(ycc - _CHROMA_OFFSET.astype(np.float32), _YCBCR_TO_RGB, np.zeros(3))
    return rgb.astype(dt).reshape(*lead, hb * BLOCK, wb * BLOCK, 3)


# ----------------------------------------------------------------------------- channel keep


def lowest_channels(y: int, cb: int, cr: int) -> np.ndarray:
    """Indices into the 192 channels of the ``y``/``cb``/``cr`` lowest frequencies per plane.

    Within each plane the indices follow zigzag order (lowest frequency first); planes follow
    ``[Y, Cb, Cr]``. This is the channel order :func:`select_lowest` returns.

    Args:
        y, cb, cr: frequencies kept per plane, each 0..64 (e.g. one row of :data:`TABLE7_KEEP`).
    """
    for name, k in (("y", y), ("cb", cb), ("cr", cr)):
        _check_count(name, k)
    return np.concatenate([ZIGZAG[:y], 64 + ZIGZAG[:cb], 128 + ZIGZAG[:cr]]).astype(np.int32)


def keep_lowest(coeffs: jax.typing.ArrayLike, y: int = 64, cb: int = 64, cr: int = 64) -> jax.Array:
    """Zero all but the lowest ``y``/``cb``/``cr`` zigzag frequencies of each plane.

    The input compression of the FUN paper (Table 7), applied at inference without retraining;
    the shape stays (..., 192) so a trained model takes the result as is.

    Args:
        coeffs: (..., 192) DCT input in the reference layout.
        y, cb, cr: frequencies kept per plane, each 0..64.
    """
    _check_coeffs(coeffs)
    mask = np.zeros(CHANNELS, dtype=np.float32)
    mask[lowest_channels(y, cb, cr)] = 1.0
    x = jnp.asarray(coeffs)
    return x * jnp.asarray(mask, dtype=x.dtype)


def select_lowest(coeffs: jax.typing.ArrayLike, y: int = 64, cb: int = 64, cr: int = 64) -> jax.Array:
    """Slice the lowest ``y``/``cb``/``cr`` frequencies out: (..., 192) -> (..., y + cb + cr).

    Smaller input for a model trained on the reduced channels; channel order as
    :func:`lowest_channels` (per plane, zigzag order).

    Args:
        coeffs: (..., 192) DCT input in the reference layout.
        y, cb, cr: frequencies kept per plane, each 0..64.
    """
    _check_coeffs(coeffs)
    return jnp.take(jnp.asarray(coeffs), jnp.asarray(lowest_channels(y, cb, cr)), axis=-1)


# ----------------------------------------------------------------------------- JPEG reader


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _libjpeg_messages():
    """Collect what libjpeg prints on file descriptor 2 (its warnings: corrupt data, premature end)."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as buf:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(buf.fileno(), 2)
        messages: list[str] = []
        try:
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            messages.extend(line for line in buf.read().decode(errors="replace").splitlines() if line.strip())


def dct_from_jpeg(source: str | os.PathLike | bytes | bytearray | memoryview, strict: bool = True) -> np.ndarray:
    """Read a JPEG's DCT coefficients without decoding pixels, in the 192-channel layout.

    The "straight from JPEG" path: libjpeg (through ``jpeglib``) reads the quantised
    coefficients, which are multiplied by their quantisation tables; 4:2:0 chroma is repeated
    2x2 onto the luma block grid. A greyscale JPEG gets zero chroma (what :func:`rgb_to_dct`
    gives a grey image). For a quality-100 JPEG of an image this equals ``rgb_to_dct`` of that
    image up to libjpeg's integer rounding.

    Args:
        source: a path to a JPEG file, the file's bytes, or an open binary file.
        strict: a JPEG that libjpeg decodes only with a warning (corrupt entropy-coded data,
            a premature end: it zero-fills the blocks it cannot read) is an error; with
            ``strict=False`` its warnings go to stderr and the coefficients are returned.

    Returns:
        float32 array (Hb, Wb, 192), Hb x Wb the luma block grid libjpeg stores
        (``ceil(H / 8) x ceil(W / 8)``).

    Raises:
        ValueError: the data is not a complete, readable baseline/progressive JPEG (libjpeg
            warned about it, with ``strict``), or uses a
            sampling other than 4:2:0, 4:4:4 or greyscale (4:2:2, 4:4:0, CMYK, ...).
        FileNotFoundError: ``source`` is a path that does not exist.
        TypeError: ``source`` is neither a path nor bytes.
    """
    import jpeglib

    data, label = _read_source(source)
    _check_jpeg_bytes(data, label)
    # jpeglib reads from a path; a temporary file keeps bytes input on the same code path.
    with tempfile.NamedTemporaryFile(suffix=".jpg") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            with _libjpeg_messages() as warnings:
                jpg = jpeglib.read_dct(tmp.name)
                planes = [jpg.Y] if not jpg.has_chrominance else [jpg.Y, jpg.Cb, jpg.Cr]
                qt, tbl = np.asarray(jpg.qt), np.asarray(jpg.quant_tbl_no)
                samp = np.asarray(jpg.samp_factor).reshape(-1, 2)
                ncomp = jpg.num_components
        except OSError as err:
            raise ValueError(f"source {label} is not a readable JPEG: {err}") from err
    if warnings and strict:
        raise ValueError(f"source {label} is a damaged JPEG (libjpeg: {warnings[0].strip()}); strict=False reads it")
    for line in warnings:
        print(line, file=sys.stderr)
    if ncomp not in (1, 3) or (ncomp == 3 and not jpg.has_chrominance):
        raise ValueError(f"source {label} has {ncomp} colour components; only greyscale and YCbCr JPEGs are supported")
    hb, wb = planes[0].shape[:2]
    out = np.zeros((hb, wb, CHANNELS), dtype=np.float32)
    for c, plane in enumerate(planes):
        coef = plane.astype(np.float32) * qt[tbl[c]].astype(np.float32)  # dequantise, (hb', wb', 8, 8)
        coef = coef.reshape(*coef.shape[:2], 64)
        if c > 0:
            ratio = samp[0] // samp[c]
            if not (np.array_equal(samp[0] % samp[c], [0, 0]) and tuple(ratio) in ((1, 1), (2, 2))):
                raise ValueError(
                    f"source {label} uses chroma sampling factors {samp.tolist()} (vertical, horizontal); "
                    "only 4:2:0 ([[2, 2], [1, 1], [1, 1]]), 4:4:4 and greyscale are supported"
                )
            coef = np.repeat(np.repeat(coef, ratio[0], axis=0), ratio[1], axis=1)[:hb, :wb]
        out[..., 64 * c : 64 * (c + 1)] = coef
    return out


def _read_source(source: object) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), f"<{len(source)} bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"source {path!r} is not an existing file")
        with open(path, "rb") as f:
            return f.read(), repr(path)
    if isinstance(source, io.IOBase):
        return source.read(), repr(source)
    raise TypeError(f"source must be a path or the JPEG's bytes, got {type(source).__name__}")


def _check_jpeg_bytes(data: bytes, label: str) -> None:
    # libjpeg accepts truncated files with only a warning and zero-fills the missing blocks, so a
    # missing end-of-image marker after the first scan is rejected here instead.
    if not data.startswith(b"\xff\xd8"):
        raise ValueError(f"source {label} is not a JPEG file (it does not start with the SOI marker FF D8)")
    sos = data.find(b"\xff\xda")
    if sos < 0 or data.rfind(b"\xff\xd9") < sos:
        raise ValueError(
            f"source {label} is a truncated or incomplete JPEG (no scan, or no end-of-image marker after it)"
        )


def reference_dct(image: np.ndarray) -> np.ndarray:
    """The FUN reference's per-image DCT: quality-100 4:2:0 JPEG via Pillow, coefficients via libjpeg."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=100, subsampling=2)
    return dct_from_jpeg(buf.getvalue())
