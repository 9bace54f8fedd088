"""freqjax.dct against independent references: scipy's DCT, float64 numpy, and libjpeg's own coefficients."""

import io

import jax
import jax.numpy as jnp
import jpeglib
import numpy as np
import pytest
import scipy.fft
from PIL import Image
from skimage import data as skdata

from freqjax import dct

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- independent references


def ref_rgb_to_dct(img: np.ndarray, chroma: str) -> np.ndarray:
    """Float64 block-by-block reference of docs/reference.md section 1 (scipy.fft.dctn per block)."""
    x = img.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    if chroma == "420":
        cb = cb.reshape(cb.shape[0] // 2, 2, cb.shape[1] // 2, 2).mean(axis=(1, 3))
        cr = cr.reshape(cr.shape[0] // 2, 2, cr.shape[1] // 2, 2).mean(axis=(1, 3))

    def blocks(p):
        hb, wb = p.shape[0] // 8, p.shape[1] // 8
        out = np.zeros((hb, wb, 64))
        for i in range(hb):
            for j in range(wb):
                out[i, j] = scipy.fft.dctn(p[8 * i : 8 * i + 8, 8 * j : 8 * j + 8] - 128, norm="ortho").ravel()
        return out

    ys, cbs, crs = blocks(y), blocks(cb), blocks(cr)
    if chroma == "420":
        cbs = cbs.repeat(2, 0).repeat(2, 1)
        crs = crs.repeat(2, 0).repeat(2, 1)
    return np.concatenate([ys, cbs, crs], axis=-1)


def libjpeg_layout(path: str) -> np.ndarray:
    """libjpeg's stored, dequantised coefficients in the reference layout, built by hand."""
    j = jpeglib.read_dct(path)
    out = []
    for c, plane in enumerate([j.Y, j.Cb, j.Cr]):
        q = j.qt[j.quant_tbl_no[c]]
        coef = (plane * q).reshape(plane.shape[0], plane.shape[1], 64)
        if coef.shape[0] != j.Y.shape[0]:
            coef = coef.repeat(2, 0).repeat(2, 1)
        out.append(coef)
    return np.concatenate(out, axis=-1).astype(np.float32)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return skdata.astronaut()  # 512x512x3 uint8, a real photograph shipped with scikit-image


@pytest.fixture(scope="module")
def q100_420(tmp_path_factory, photo) -> str:
    path = str(tmp_path_factory.mktemp("jpeg") / "astronaut_q100_420.jpg")
    Image.fromarray(photo).save(path, quality=100, subsampling=2)  # subsampling=2 is 4:2:0
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


# ----------------------------------------------------------------------------- transforms


def test_dct_matrix_is_scipy_orthonormal_dct():
    x = RNG.normal(size=(8, 5))
    np.testing.assert_allclose(dct.dct_matrix() @ x, scipy.fft.dct(x, axis=0, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(dct.dct_matrix(16) @ dct.dct_matrix(16).T, np.eye(16), atol=1e-12)


def test_block_dct_equals_scipy_dctn_on_random_blocks():
    planes = RNG.uniform(-128, 128, size=(2, 16, 24))
    got = np.asarray(dct.block_dct(planes))
    assert got.shape == (2, 2, 3, 64)
    for n in range(2):
        for i in range(2):
            for j in range(3):
                want = scipy.fft.dctn(planes[n, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8], norm="ortho").ravel()
                np.testing.assert_allclose(got[n, i, j], want, rtol=0, atol=2e-4)
    np.testing.assert_allclose(np.asarray(dct.block_idct(got)), planes, atol=2e-4)


def test_zigzag_table_is_the_jpeg_zigzag():
    # Independent construction: walk anti-diagonals, alternating direction.
    order = []
    for s in range(15):
        cells = [(v, s - v) for v in range(8) if 0 <= s - v < 8]
        order += cells if s % 2 else cells[::-1]
    assert [8 * v + u for v, u in order] == dct.ZIGZAG.tolist()
    assert sorted(dct.ZIGZAG.tolist()) == list(range(64))


def test_ycbcr_matches_jfif_formula_and_inverts():
    x = RNG.integers(0, 256, size=(4, 6, 3)).astype(np.float64)
    ycc = np.asarray(dct.rgb_to_ycbcr(x.astype(np.uint8)))
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    np.testing.assert_allclose(ycc[..., 0], 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-3)
    np.testing.assert_allclose(ycc[..., 1], -0.168736 * r - 0.331264 * g + 0.5 * b + 128, atol=1e-3)
    np.testing.assert_allclose(ycc[..., 2], 0.5 * r - 0.418688 * g - 0.081312 * b + 128, atol=1e-3)
    np.testing.assert_allclose(np.asarray(dct.ycbcr_to_rgb(ycc)), x, atol=2e-3)


@pytest.mark.parametrize("chroma", ["420", "444"])
def test_rgb_to_dct_equals_float64_reference(chroma):
    imgs = RNG.integers(0, 256, size=(2, 32, 48, 3), dtype=np.uint8)
    got = np.asarray(dct.rgb_to_dct(imgs, chroma))
    assert got.shape == (2, 4, 6, 192) and got.dtype == np.float32
    for n in range(2):
        np.testing.assert_allclose(got[n], ref_rgb_to_dct(imgs[n], chroma), rtol=0, atol=5e-3)


def test_rgb_to_dct_layout_on_constant_image():
    # A flat grey image has only DC energy: Y DC = 8 * (v - 128), chroma DC 0 (128 - 128).
    img = np.full((16, 16, 3), 200, np.uint8)
    out = np.asarray(dct.rgb_to_dct(img))
    np.testing.assert_allclose(out[..., 0], 8 * (200 - 128), atol=1e-3)
    np.testing.assert_allclose(out[..., 1:], 0, atol=1e-3)


def test_444_round_trip_recovers_pixels():
    imgs = RNG.integers(0, 256, size=(3, 16, 24, 3)).astype(np.float32)
    back = np.asarray(dct.dct_to_rgb(dct.rgb_to_dct(imgs, "444"), "444"))
    np.testing.assert_allclose(back, imgs, rtol=0, atol=2e-3)


def test_420_round_trip_of_a_photo_has_high_psnr(photo):
    back = np.asarray(dct.dct_to_rgb(dct.rgb_to_dct(photo, "420"), "420"))
    assert back.shape == photo.shape
    assert psnr(np.clip(back, 0, 255), photo) >= 35.0


def test_rgb_to_dct_matches_libjpeg_quality_100(photo, q100_420):
    ours = np.round(np.asarray(dct.rgb_to_dct(photo, "420")))
    theirs = libjpeg_layout(q100_420)
    assert ours.shape == theirs.shape == (64, 64, 192)
    diff = np.abs(ours - theirs)
    assert diff.max() <= 3, diff.max()
    assert diff.mean() <= 0.25, diff.mean()
    assert np.mean(diff <= 1) >= 0.995, np.mean(diff <= 1)


def test_jit_vmap_leading_dims_and_bfloat16():
    imgs = RNG.integers(0, 256, size=(2, 3, 16, 32, 3), dtype=np.uint8)
    eager = np.asarray(dct.rgb_to_dct(imgs))
    assert eager.shape == (2, 3, 2, 4, 192)
    np.testing.assert_allclose(np.asarray(jax.jit(dct.rgb_to_dct)(imgs)), eager, atol=1e-3)
    np.testing.assert_allclose(np.asarray(jax.vmap(dct.rgb_to_dct)(imgs)), eager, atol=1e-3)
    bf = dct.rgb_to_dct(imgs, dtype=jnp.bfloat16)
    assert bf.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(bf, np.float32), eager, rtol=1e-2, atol=0.5)
    # bfloat16 input is accepted and computed in float32
    from_bf = np.asarray(dct.rgb_to_dct(jnp.asarray(imgs, jnp.bfloat16)))
    np.testing.assert_allclose(from_bf, eager, atol=1e-3)


# ----------------------------------------------------------------------------- channel keep


@pytest.mark.parametrize("keep", dct.TABLE7_KEEP)
def test_keep_lowest_keeps_exactly_the_listed_channels(keep):
    y, cb, cr = keep
    coeffs = RNG.normal(size=(2, 3, 192)).astype(np.float32) + 10.0  # no accidental zeros
    kept = np.asarray(dct.keep_lowest(coeffs, y, cb, cr))
    nonzero = set(np.flatnonzero(np.all(kept != 0, axis=(0, 1))).tolist())
    want = set(dct.ZIGZAG[:y].tolist()) | {64 + c for c in dct.ZIGZAG[:cb]} | {128 + c for c in dct.ZIGZAG[:cr]}
    assert nonzero == want and len(want) == y + cb + cr
    np.testing.assert_array_equal(kept[..., sorted(want)], coeffs[..., sorted(want)])

    sliced = np.asarray(dct.select_lowest(coeffs, y, cb, cr))
    assert sliced.shape == (2, 3, y + cb + cr)
    np.testing.assert_array_equal(sliced, coeffs[..., dct.lowest_channels(y, cb, cr)])
    # within a plane, lowest frequency first (zigzag order)
    np.testing.assert_array_equal(dct.lowest_channels(y, cb, cr)[:y], dct.ZIGZAG[:y])


def test_keep_lowest_preset_row_2_channel_names():
    # 64/12/12 keeps all of Y and, for chroma, DC plus the first 11 AC terms in zigzag order.
    ch = dct.lowest_channels(64, 12, 12)
    assert ch[64:76].tolist() == [64 + c for c in [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25]]


# ----------------------------------------------------------------------------- JPEG reader


def test_dct_from_jpeg_equals_libjpeg_coefficients(q100_420):
    got = dct.dct_from_jpeg(q100_420)
    assert got.dtype == np.float32 and got.shape == (64, 64, 192)
    np.testing.assert_array_equal(got, libjpeg_layout(q100_420))
    with open(q100_420, "rb") as f:
        raw = f.read()
    np.testing.assert_array_equal(dct.dct_from_jpeg(raw), got)
    np.testing.assert_array_equal(dct.dct_from_jpeg(io.BytesIO(raw)), got)


def test_dct_from_jpeg_dequantises_with_the_file_tables(tmp_path, photo):
    # At quality 75 the tables are far from 1: the inverse DCT of our luma must reproduce the luma
    # libjpeg itself decodes (Pillow's draft mode returns the decoder's Y plane, before colour).
    path = str(tmp_path / "q75.jpg")
    Image.fromarray(photo).save(path, quality=75, subsampling=2)
    assert jpeglib.read_dct(path).qt.max() > 1
    coeffs = dct.dct_from_jpeg(path)
    luma = np.asarray(dct.block_idct(coeffs[..., :64])) + 128
    im = Image.open(path)
    im.draft("YCbCr", im.size)
    decoded_y = np.asarray(im)[..., 0].astype(np.float32)
    assert np.abs(np.clip(np.round(luma), 0, 255) - decoded_y).max() <= 1
    # chroma blocks are repeated 2x2 onto the luma grid
    np.testing.assert_array_equal(coeffs[0::2, 0::2, 64:], coeffs[1::2, 1::2, 64:])


def test_dct_from_jpeg_444_and_greyscale(tmp_path, photo):
    p444 = str(tmp_path / "q100_444.jpg")
    Image.fromarray(photo).save(p444, quality=100, subsampling=0)
    got = dct.dct_from_jpeg(p444)
    j = jpeglib.read_dct(p444)
    np.testing.assert_array_equal(got[..., 64:128], j.Cb.reshape(64, 64, 64))
    ours = np.round(np.asarray(dct.rgb_to_dct(photo, "444")))
    assert np.abs(ours - got).max() <= 3

    grey = str(tmp_path / "grey.jpg")
    Image.fromarray(photo[..., 1]).save(grey, quality=95)
    g = dct.dct_from_jpeg(grey)
    jg = jpeglib.read_dct(grey)
    np.testing.assert_array_equal(g[..., :64], (jg.Y * jg.qt[0]).reshape(64, 64, 64))
    assert not g[..., 64:].any()


def test_dct_from_jpeg_odd_size_crops_chroma_to_luma_grid(tmp_path, photo):
    path = str(tmp_path / "odd.jpg")
    Image.fromarray(photo[:100, :90]).save(path, quality=100, subsampling=2)
    assert dct.dct_from_jpeg(path).shape == (13, 12, 192)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        ("422", ValueError, "sampling"),
        ("truncated", ValueError, "truncated"),
        ("garbage", ValueError, "not a JPEG"),
        ("soi_garbage", ValueError, "truncated|not a readable"),
        ("png", ValueError, "not a JPEG"),
        ("missing", FileNotFoundError, "not an existing file"),
        ("int", TypeError, "path or the JPEG's bytes"),
    ],
)
def test_dct_from_jpeg_rejects_bad_input(tmp_path, photo, q100_420, make, error, match):
    buf = io.BytesIO()
    if make == "422":
        Image.fromarray(photo).save(buf, format="JPEG", quality=90, subsampling=1)
        source = buf.getvalue()
    elif make == "truncated":
        source = open(q100_420, "rb").read()[:20000]  # noqa: SIM115
    elif make == "garbage":
        source = b"hello, not an image"
    elif make == "soi_garbage":
        source = b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xda\x00\x02\xff\xd9"
    elif make == "png":
        Image.fromarray(photo).save(buf, format="PNG")
        source = buf.getvalue()
    elif make == "missing":
        source = str(tmp_path / "nope.jpg")
    else:
        source = 42
    with pytest.raises(error, match=match):
        dct.dct_from_jpeg(source)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(images=np.zeros((24, 32, 3), np.uint8)), ValueError, "multiples of 16.*H=24"),
        (dict(images=np.zeros((16, 20, 3), np.uint8), chroma="444"), ValueError, "multiples of 8.*W=20"),
        (dict(images=np.zeros((16, 16, 4), np.uint8)), ValueError, r"3 colour channels.*\(16, 16, 4\)"),
        (dict(images=np.zeros((16, 16), np.uint8)), ValueError, "shape"),
        (dict(images=np.zeros((16, 16, 3), bool)), TypeError, "dtype bool"),
        (dict(images=np.full((16, 16, 3), "a")), TypeError, "dtype <U1"),
        (dict(images=np.zeros((16, 16, 3), np.complex64)), TypeError, "complex64"),
        (dict(images=np.zeros((16, 16, 3), np.uint8), chroma="422"), ValueError, "'420' or '444'.*'422'"),
        (dict(images=np.zeros((16, 16, 3), np.uint8), dtype=jnp.int32), TypeError, "floating dtype"),
    ],
)
def test_rgb_to_dct_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        dct.rgb_to_dct(**kwargs)


def test_other_functions_reject_bad_input():
    with pytest.raises(ValueError, match=r"y must be.*0\.\.64.*65"):
        dct.keep_lowest(np.zeros((192,)), 65, 1, 1)
    with pytest.raises(ValueError, match=r"192 channels.*191"):
        dct.keep_lowest(np.zeros((191,)), 1, 1, 1)
    with pytest.raises(ValueError, match="cb must be"):
        dct.select_lowest(np.zeros((192,)), 1, -1, 1)
    with pytest.raises(ValueError, match="even number of block rows"):
        dct.dct_to_rgb(np.zeros((3, 4, 192)), "420")
    with pytest.raises(ValueError, match="multiples of 8"):
        dct.block_dct(np.zeros((12, 16)))
    with pytest.raises(ValueError, match="k must be"):
        dct.zigzag_order(70)


def test_reference_path_agrees_with_rgb_to_dct():
    from freqjax.data import grating_image

    img, _ = grating_image(3, size=64)
    ref = dct.reference_dct(img)
    assert ref.shape == (8, 8, 192)
    assert np.abs(np.round(np.asarray(dct.rgb_to_dct(img))) - ref).max() <= 4


def test_float_images_on_the_unit_scale_are_refused():
    x = np.random.default_rng(0).uniform(0, 1, (16, 16, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"look like the 0\.\.1 scale"):
        dct.rgb_to_dct(x)
    np.testing.assert_allclose(dct.rgb_to_dct(x * 255), dct.rgb_to_dct((x * 255).astype(np.float64)), atol=1e-3)
    assert dct.rgb_to_dct(np.zeros((16, 16, 3), np.float32)).shape == (2, 2, 192)  # black is fine


def test_a_jpeg_damaged_mid_scan_is_an_error_unless_not_strict():
    import io

    from PIL import Image

    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    mid = (data.find(b"\xff\xda") + data.rfind(b"\xff\xd9")) // 2
    data[mid : mid + 40] = b"\xff\xd0" * 20  # stray restart markers inside the entropy-coded scan
    with pytest.raises(ValueError, match=r"damaged JPEG \(libjpeg: Corrupt JPEG data"):
        dct.dct_from_jpeg(bytes(data))
    coeffs = dct.dct_from_jpeg(bytes(data), strict=False)  # what libjpeg salvaged: many zero blocks
    assert coeffs.shape == (8, 8, 192) and (coeffs[..., :64] == 0).all(-1).mean() > 0.2
