"""Bad-data handling and the square resize of datasets/imageio.py (no tfds needed)."""
import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from datasets.imageio import ImageSpec, decode_png, encode_png, list_images, prepare_file, prepare_image


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


SPEC = ImageSpec(16)


def test_exact_size_rgb_is_unchanged():
    a = _rgb(16, 16)
    p = prepare_image("a", _bytes(Image.fromarray(a), "PNG"), SPEC)
    assert p.skipped is None and p.converted == ()
    np.testing.assert_array_equal(decode_png(p.png), a)


def test_png_round_trip_is_lossless():
    a = _rgb(7, 5, seed=3)
    np.testing.assert_array_equal(decode_png(encode_png(a)), a)
    with pytest.raises(ValueError, match=r"uint8 \[H,W,3\]"):
        encode_png(a.astype(np.float32))


def test_non_square_is_centre_cropped():
    # 16x32 (HxW): left quarter red, middle half green, right quarter blue -> the centre crop is all green.
    a = np.zeros((16, 32, 3), np.uint8)
    a[:, :8, 0] = 255
    a[:, 8:24, 1] = 255
    a[:, 24:, 2] = 255
    p = prepare_image("a", a, SPEC)
    assert "cropped non-square" in p.converted
    np.testing.assert_array_equal(decode_png(p.png), np.broadcast_to(np.array([0, 255, 0], np.uint8), (16, 16, 3)))


def test_downscale_of_constant_image_is_constant():
    a = np.full((64, 64, 3), (10, 200, 77), np.uint8)
    out = decode_png(prepare_image("a", a, SPEC).png)
    assert out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out, np.broadcast_to(np.array([10, 200, 77], np.uint8), out.shape))


@pytest.mark.parametrize("mode, note", [("L", "grayscale->RGB"), ("CMYK", "CMYK->RGB"),
                                        ("RGBA", "RGBA->RGB (alpha composited on white)"),
                                        ("LA", "LA->RGB (alpha composited on white)"), ("P", "palette->RGB"),
                                        ("I;16", "I;16 (high bit depth grayscale)->RGB")])
def test_modes_are_converted_to_rgb(mode, note):
    im = Image.fromarray(_rgb(16, 16)).convert(mode) if mode != "I;16" else Image.fromarray(
        np.full((16, 16), 65535, np.uint16))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    p = prepare_image("x", _bytes(im, fmt), SPEC)
    assert p.skipped is None, p.detail
    assert note in p.converted
    out = decode_png(p.png)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    if mode == "I;16":
        assert (out == 255).all()                  # full-scale 16 bit -> full-scale 8 bit
    if mode in ("L", "I;16"):
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_transparent_pixels_become_white():
    a = np.zeros((16, 16, 4), np.uint8)            # fully transparent black
    out = decode_png(prepare_image("t", a, SPEC).png)
    assert (out == 255).all()


def test_exif_orientation_is_applied():
    a = np.zeros((16, 16, 3), np.uint8)
    a[:8] = 255                                     # top half white
    exif = Image.Exif()
    exif[0x0112] = 3                                # rotated 180 degrees
    p = prepare_image("r", _bytes(Image.fromarray(a), "PNG", exif=exif), SPEC)
    assert "EXIF orientation applied" in p.converted
    out = decode_png(p.png)
    assert (out[8:] == 255).all() and (out[:8] == 0).all()


def test_bad_files_are_skipped_with_reasons(tmp_path):
    good = _bytes(Image.fromarray(_rgb(16, 16)), "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("not an image")
    Image.fromarray(_rgb(7, 7)).save(tmp_path / "tiny.png")
    Image.fromarray(_rgb(16, 40)).save(tmp_path / "wide.png")
    reasons = {k: prepare_file(k, p, SPEC).skipped for k, p in list_images(tmp_path)}
    assert reasons == {"empty.jpg": "unreadable (corrupt or truncated)",
                       "junk.png": "unreadable (corrupt or truncated)",
                       "trunc.jpg": "unreadable (corrupt or truncated)",
                       "readme.txt": "not an image file (.txt)",
                       "tiny.png": "too small (shorter side < 8 px)",
                       "wide.png": "aspect ratio above 2"}


def test_list_images_errors_and_hidden_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="is empty"):
        list_images(tmp_path)
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.png").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    assert [k for k, _ in list_images(tmp_path)] == ["a.png", "sub/b.png"]


def test_spec_validation():
    for bad in (0, 3, 48, 100):
        with pytest.raises(ValueError, match="power of two"):
            ImageSpec(bad)
    with pytest.raises(ValueError, match="crop_fraction"):
        ImageSpec(16, crop_fraction=0)


@settings(deadline=None, max_examples=25)
@given(h=st.integers(8, 60), w=st.integers(8, 60), r=st.sampled_from([4, 8, 16, 32]))
def test_any_reasonable_image_becomes_r_by_r(h, w, r):
    spec = ImageSpec(r, min_size=8, max_aspect=8.0)
    p = prepare_image("x", _rgb(h, w, seed=h * 100 + w), spec)
    assert p.skipped is None
    out = decode_png(p.png)
    assert out.shape == (r, r, 3)
    assert ("cropped non-square" in p.converted) == (h != w)
    assert ("upscaled" in p.converted) == (min(h, w) < r)
