"""The embedded demo domains (bundled LFW faces -> cartoon renderings)."""
import numpy as np
import pytest

import hashlib

from datasets.demo import (INK, INK_B, TOON_PALETTE, TOON_PALETTE_B, cartoon_domains, heldout_photo, lfw_faces,
                           load_demo_domains, photo_domain, toonify_render)

# sha256 of toonify_render(photo_domain(32, 2)) before the palette became a parameter: the first look must not move.
DEFAULT_RENDER_SHA256 = "96ed34355aad6275f28d5bf8032235dd75011edcc8503e31906cc95cc130decf"


def _tone_map(images: np.ndarray, palette: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """[N,H,W] index 0..2 of each pixel's palette tone, 3 for ink; fails if a pixel is none of them."""
    colours = np.concatenate([palette, ink[None]]).astype(np.uint8)                        # [4,3]
    hit = (images[..., None, :] == colours).all(-1)                                        # [N,H,W,4]
    assert hit.any(-1).all(), "a pixel outside the palette"
    return hit.argmax(-1)


@pytest.fixture(scope="module")
def domains32():
    return load_demo_domains(32, variants=4)


def test_shapes_and_determinism(domains32):
    a, b, photo = domains32
    assert a.shape == b.shape == (400, 32, 32, 3) and a.dtype == b.dtype == np.uint8
    assert photo.shape == (32, 32, 3) and photo.dtype == np.uint8
    a2, b2, p2 = load_demo_domains(32, variants=4)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    np.testing.assert_array_equal(photo, p2)


def test_photo_domain_is_grey_real_faces(domains32):
    a, _, photo = domains32
    faces = lfw_faces()
    assert faces.shape == (100, 25, 25) and faces.std() > 30               # real images, not blank
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    assert (photo[..., 0] == photo[..., 2]).all()
    # Variant 0 of each face is the plain upsampling of that face; the others are close to it (aligned framings).
    v = a.reshape(100, 4, 32, 32, 3).astype(np.float64)
    plain = photo_domain(32, 1).astype(np.float64)
    np.testing.assert_array_equal(v[:, 0], plain)
    same_face = np.abs(v[:, 1:] - v[:, :1]).mean()
    other_face = np.abs(v[1:, 0] - v[:-1, 0]).mean()
    assert 0 < same_face < other_face / 2
    # The held-out photo is none of the training faces.
    assert np.abs(a.astype(float) - photo.astype(float)).mean(axis=(1, 2, 3)).min() > 10


def test_toon_domain_is_the_rendering_of_the_photo_domain(domains32):
    a, b, _ = domains32
    np.testing.assert_array_equal(b[:7], toonify_render(a[:7]))          # per image, independent of the batch
    colours = {tuple(c) for c in b.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in np.concatenate([TOON_PALETTE, INK[None]]).astype(np.uint8)}
    assert len(colours) == 4                                              # 3 flat tones + ink, all used
    assert 0.01 < (b == INK.astype(np.uint8)).all(-1).mean() < 0.2       # some ink, not a black image
    # Structure is shared: the toon's brightness follows the photo's (rank correlation of pixel brightness).
    lum_b = b.astype(float) @ [0.299, 0.587, 0.114]
    corr = np.corrcoef(lum_b[:50].reshape(-1), a[:50, ..., 0].reshape(-1).astype(float))[0, 1]
    assert corr > 0.6


def test_resolutions_and_errors():
    assert heldout_photo(64).shape == (64, 64, 3)
    assert photo_domain(16, 2).shape == (200, 16, 16, 3)
    with pytest.raises(ValueError, match="resolution must be >= 8"):
        photo_domain(4)
    with pytest.raises(ValueError, match="uint8 \\[N,H,W,3\\]"):
        toonify_render(np.zeros((2, 8, 8), np.uint8))


def test_default_look_is_unchanged():
    photos = photo_domain(32, 2)
    default = toonify_render(photos)
    assert hashlib.sha256(default.tobytes()).hexdigest() == DEFAULT_RENDER_SHA256
    np.testing.assert_array_equal(toonify_render(photos, TOON_PALETTE, INK), default)


def test_second_look_recolours_the_same_tone_layout():
    a, b = cartoon_domains(32, variants=2)
    assert a.shape == b.shape == (200, 32, 32, 3) and a.dtype == b.dtype == np.uint8
    np.testing.assert_array_equal(a, load_demo_domains(32, variants=2)[1])   # the first look is domain B
    np.testing.assert_array_equal(b, toonify_render(photo_domain(32, 2), TOON_PALETTE_B, INK_B))
    tone_a, tone_b = _tone_map(a, TOON_PALETTE, INK), _tone_map(b, TOON_PALETTE_B, INK_B)
    np.testing.assert_array_equal(tone_a, tone_b)                           # pixel for pixel the same layout
    assert set(np.unique(tone_a)) == {0, 1, 2, 3}                            # every tone and the ink are used
    # Another colouring, visibly: each flat tone moves by > 50 RGB units, and warm (red > blue) turns cool.
    assert (np.linalg.norm(TOON_PALETTE_B - TOON_PALETTE, axis=1) > 50).all()
    assert (TOON_PALETTE[:2, 0] > TOON_PALETTE[:2, 2]).all() and (TOON_PALETTE_B[:2, 2] > TOON_PALETTE_B[:2, 0]).all()
    assert np.abs(a.astype(float).mean((0, 1, 2)) - b.astype(float).mean((0, 1, 2))).max() > 30


def test_palette_errors():
    x = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"palette must have shape \[3, 3\] \(RGB\); got \[2, 3\]"):
        toonify_render(x, TOON_PALETTE[:2])
    with pytest.raises(ValueError, match=r"ink must be RGB values in \[0, 255\]; got \[0.0, 300.0, 0.0\]"):
        toonify_render(x, ink=[0, 300, 0])
    with pytest.raises(ValueError, match=r"palette must be RGB values in \[0, 255\]"):
        toonify_render(x, np.where(np.eye(3, dtype=bool), np.nan, TOON_PALETTE))
