"""The embedded demo domains (bundled LFW faces -> cartoon renderings)."""
import numpy as np
import pytest

from datasets.demo import (INK, TOON_PALETTE, heldout_photo, lfw_faces, load_demo_domains, photo_domain,
                           toonify_render)


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
