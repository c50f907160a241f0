"""SPADE-AnimeFace rough sketches: the OpenCV chain, its work size, the cache, and sketch builds in a process pool."""
import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2")

from datasets.builders import prepare_dataset  # noqa: E402
from datasets.imageio import decode_png, encode_png  # noqa: E402
from datasets.pipeline import open_source  # noqa: E402
from datasets.sketch import (ROUGH_SIZE, SketchCache, chain_params, odd_kernel, rough_sketch,  # noqa: E402
                             sketch_png)


def _chain(hsv_in_rgb: np.ndarray, k1: int, sp: float, k2: int) -> np.ndarray:
    """The steps of imoken1122/SPADE-AnimeFace img_preprocessing.py after its resize, written out inline."""
    hsv = cv2.cvtColor(hsv_in_rgb, cv2.COLOR_RGB2HSV)
    hsv = cv2.medianBlur(hsv, k1)
    hsv = cv2.pyrMeanShiftFiltering(hsv, sp, 52)
    hsv = cv2.medianBlur(hsv, k2)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return data.astronaut()                                                   # 512x512 RGB


@pytest.fixture(scope="module")
def face64(astronaut):
    return np.asarray(Image.fromarray(astronaut).resize((64, 64), Image.Resampling.LANCZOS, box=(150, 40, 300, 190)))


def test_work_size_256_is_the_reference_chain_bit_for_bit(astronaut):
    x = cv2.resize(astronaut, (256, 256))                                     # the reference's own first step
    np.testing.assert_array_equal(rough_sketch(x), _chain(x, 9, 52, 15))
    assert ROUGH_SIZE == 256 and chain_params(256) == (9, 52.0, 15)


def test_spatial_parameters_scale_with_the_work_size():
    assert chain_params(128) == (5, 26.0, 7)
    assert chain_params(64) == (3, 13.0, 3)                # 2.25 and 3.75 -> nearest odd 3
    assert chain_params(16) == (3, 3.25, 3)
    assert [odd_kernel(x) for x in (0.5, 2.25, 4.0, 4.5, 7.5, 9.0, 15.0)] == [3, 3, 5, 5, 7, 9, 15]


def test_rough_sketch_is_deterministic_and_keeps_the_input_shape(face64):
    s1, s2 = rough_sketch(face64, 64), rough_sketch(face64, 64)
    assert s1.shape == face64.shape and s1.dtype == np.uint8
    np.testing.assert_array_equal(s1, s2)
    # Not 64 px: resized to the work size (bilinear, as the reference), the chain, then resized back.
    small = np.ascontiguousarray(face64[:48, :40])
    out = rough_sketch(small, 64)
    assert out.shape == (48, 40, 3)
    ref = cv2.resize(_chain(cv2.resize(small, (64, 64)), 3, 13.0, 3), (40, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(rough_sketch(small, 64), out)
    # One side larger than the work size: bilinear back (area averaging only shrinks).
    wide = np.ascontiguousarray(np.concatenate([face64, face64], axis=1)[:40])          # 40x128
    ref = cv2.resize(_chain(cv2.resize(wide, (64, 64)), 3, 13.0, 3), (128, 40), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(rough_sketch(wide, 64), ref)


def test_rough_sketch_flattens_colours(astronaut):
    x = np.asarray(Image.fromarray(astronaut).resize((64, 64), Image.Resampling.LANCZOS))
    s = rough_sketch(x, 64)
    n_in = len(np.unique(x.reshape(-1, 3), axis=0))
    n_out = len(np.unique(s.reshape(-1, 3), axis=0))
    assert n_in / n_out > 2.5                      # measured 3483 -> 1050 (3.3x): flat patches
    # The sketch keeps the overall colour layout (a smoothing, not a new picture).
    assert np.abs(s.astype(float).mean((0, 1)) - x.astype(float).mean((0, 1))).max() < 25


@pytest.mark.parametrize("work_size", [32, ROUGH_SIZE])
def test_rough_sketch_of_constant_image_is_that_colour(work_size):
    a = np.full((32, 32, 3), (200, 80, 40), np.uint8)
    out = rough_sketch(a, work_size)
    # One HSV round trip of a flat colour: equal to cv2's own conversion pair (resizing keeps it flat).
    ref = cv2.cvtColor(cv2.cvtColor(a, cv2.COLOR_RGB2HSV), cv2.COLOR_HSV2RGB)
    np.testing.assert_array_equal(out, ref)


def test_rough_sketch_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"uint8 \[H,W,3\]"):
        rough_sketch(np.zeros((8, 8), np.uint8))
    img = np.zeros((16, 16, 3), np.uint8)
    for bad in (15, 0, -64, 64.0, True, "64", None):
        with pytest.raises(ValueError, match=rf"work size must be an int >= 16; got {bad!r}"):
            rough_sketch(img, bad)
    with pytest.raises(ValueError, match="work size must be an int >= 16; got 8"):
        sketch_png(encode_png(img), SketchCache(tmp_path), 8)
    assert not list(tmp_path.iterdir())


def test_sketch_cache_round_trip(tmp_path, face64):
    cache = SketchCache(tmp_path / "cache")
    src = encode_png(face64)
    png, cached = sketch_png(src, cache, 64)
    assert not cached
    again, cached = sketch_png(src, cache, 64)
    assert cached and again == png
    np.testing.assert_array_equal(decode_png(png), rough_sketch(face64, 64))
    assert not list((tmp_path / "cache").rglob(".*tmp*"))


def test_sketch_cache_keeps_work_sizes_apart(tmp_path, face64):
    cache = SketchCache(tmp_path / "cache")
    src = encode_png(face64)
    by_size = {n: sketch_png(src, cache, n) for n in (32, 48, 64)}
    assert all(not cached for _, cached in by_size.values())
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 3
    assert len({png for png, _ in by_size.values()}) == 3                    # three different roughs
    for n, (png, _) in by_size.items():
        hit, cached = sketch_png(src, cache, n)
        assert cached and hit == png
        np.testing.assert_array_equal(decode_png(hit), rough_sketch(face64, n))


def test_sketch_cache_misses_after_an_opencv_upgrade(tmp_path, face64, monkeypatch):
    cache = SketchCache(tmp_path / "cache")
    src = encode_png(face64)
    sketch_png(src, cache, 64)
    assert sketch_png(src, cache, 64)[1]
    monkeypatch.setattr(cv2, "__version__", cv2.__version__ + ".next")
    assert not sketch_png(src, cache, 64)[1]                                 # recomputed, not the old file
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 2


def test_sketch_build_in_process_pool_uses_and_fills_cache(tmp_path):
    from skimage import data
    src = tmp_path / "anime"
    src.mkdir()
    photos = {"a.png": data.astronaut(), "b.png": data.chelsea(), "c.png": data.coffee()}
    for name, a in photos.items():
        Image.fromarray(a).save(src / name)
    cache = tmp_path / "cache"
    out = tmp_path / "with_sketch"
    summary = prepare_dataset("folder", out, src=src, resolution=32, sketch=True, sketch_cache=cache, sketch_size=64,
                              workers=2, progress=False)
    assert summary.kept == {"train": 3} and summary.sketches == {"computed": 3, "cached": 0}
    for i, ex in enumerate(open_source(out)[i] for i in range(3)):
        np.testing.assert_array_equal(ex["sketch"], rough_sketch(ex["image"], 64))   # stored next to the original
    assert len(list(cache.rglob("*.png"))) == 3                                        # explicit cache is kept
    again = prepare_dataset("folder", tmp_path / "again", src=src, resolution=32, sketch=True, sketch_cache=cache,
                            sketch_size=64, progress=False)
    assert again.sketches == {"computed": 0, "cached": 3}
    other = prepare_dataset("folder", tmp_path / "other", src=src, resolution=32, sketch=True, sketch_cache=cache,
                            sketch_size=32, progress=False)
    assert other.sketches == {"computed": 3, "cached": 0}                    # another work size: not those
