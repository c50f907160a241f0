"""SPADE-AnimeFace rough sketches: the OpenCV chain, the cache, and sketch builds in a process pool."""
import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2")

from datasets.builders import prepare_dataset  # noqa: E402
from datasets.imageio import decode_png, encode_png  # noqa: E402
from datasets.pipeline import open_source  # noqa: E402
from datasets.sketch import SketchCache, rough_sketch, sketch_png  # noqa: E402


@pytest.fixture(scope="module")
def face64():
    from skimage import data
    return np.asarray(Image.fromarray(data.astronaut()).resize((64, 64), Image.Resampling.LANCZOS,
                                                                box=(150, 40, 300, 190)))


def test_rough_sketch_flattens_colours_deterministically(face64):
    s1, s2 = rough_sketch(face64), rough_sketch(face64)
    assert s1.shape == face64.shape and s1.dtype == np.uint8
    np.testing.assert_array_equal(s1, s2)
    n_in = len(np.unique(face64.reshape(-1, 3), axis=0))
    n_out = len(np.unique(s1.reshape(-1, 3), axis=0))
    assert n_out < n_in / 4                        # flat regions: far fewer distinct colours
    # The sketch keeps the overall colour layout (a smoothing, not a new picture).
    assert np.abs(s1.astype(float).mean((0, 1)) - face64.astype(float).mean((0, 1))).max() < 25


def test_rough_sketch_of_constant_image_is_that_colour():
    a = np.full((32, 32, 3), (200, 80, 40), np.uint8)
    out = rough_sketch(a)
    # One HSV round trip of a flat colour: equal to cv2's own conversion pair.
    ref = cv2.cvtColor(cv2.cvtColor(a, cv2.COLOR_RGB2HSV), cv2.COLOR_HSV2RGB)
    np.testing.assert_array_equal(out, ref)


def test_rough_sketch_rejects_bad_input():
    with pytest.raises(ValueError, match=r"uint8 \[H,W,3\]"):
        rough_sketch(np.zeros((8, 8), np.uint8))


def test_sketch_cache_round_trip(tmp_path, face64):
    cache = SketchCache(tmp_path / "cache")
    src = encode_png(face64)
    png, cached = sketch_png(src, cache)
    assert not cached
    again, cached = sketch_png(src, cache)
    assert cached and again == png
    np.testing.assert_array_equal(decode_png(png), rough_sketch(face64))
    assert not list((tmp_path / "cache").rglob(".*tmp*"))


def test_sketch_build_in_process_pool_uses_and_fills_cache(tmp_path):
    from skimage import data
    src = tmp_path / "anime"
    src.mkdir()
    photos = {"a.png": data.astronaut(), "b.png": data.chelsea(), "c.png": data.coffee()}
    for name, a in photos.items():
        Image.fromarray(a).save(src / name)
    cache = tmp_path / "cache"
    out = tmp_path / "with_sketch"
    summary = prepare_dataset("folder", out, src=src, resolution=32, sketch=True, sketch_cache=cache, workers=2,
                              progress=False)
    assert summary.kept == {"train": 3} and summary.sketches == {"computed": 3, "cached": 0}
    for i, ex in enumerate(open_source(out)[i] for i in range(3)):
        np.testing.assert_array_equal(ex["sketch"], rough_sketch(ex["image"]))   # stored next to the original
    assert len(list(cache.rglob("*.png"))) == 3                                    # explicit cache is kept
    again = prepare_dataset("folder", tmp_path / "again", src=src, resolution=32, sketch=True, sketch_cache=cache,
                            progress=False)
    assert again.sketches == {"computed": 0, "cached": 3}
