"""The embedded many-styles domain (bundled LFW faces -> eight distinct looks, for GANs N' Roses)."""
import dataclasses
import itertools

import numpy as np
import pytest

from datasets.demo import photo_domain
from datasets.styles import LOOKS, Look, face_mask, style_render, styled_domain

LUMA = np.array([0.299, 0.587, 0.114])


def _colours(pixels: np.ndarray) -> set[tuple[int, ...]]:
    """The distinct RGB colours of uint8 [..., 3] pixels."""
    return {tuple(int(v) for v in c) for c in np.unique(pixels.reshape(-1, 3), axis=0)}


def _rgb_set(*colours) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in c) for c in colours}


@pytest.fixture(scope="module")
def styled32():
    return styled_domain(32, variants=8)


@pytest.fixture(scope="module")
def photos32():
    return photo_domain(32, 1)                                              # [100,32,32,3], one framing per face


def test_shapes_order_and_determinism(styled32):
    images, index = styled32
    assert images.shape == (800, 32, 32, 3) and images.dtype == np.uint8
    assert index.shape == (800,) and index.dtype == np.int32
    np.testing.assert_array_equal(index, np.arange(800) % len(LOOKS))
    # Face-major: face i owns images 8i..8i+7, and with 8 variants it appears once in every look.
    np.testing.assert_array_equal(np.sort(index.reshape(100, 8), axis=1), np.tile(np.arange(8), (100, 1)))
    again, index2 = styled_domain(32, variants=8)
    assert again.tobytes() == images.tobytes() and index2.tobytes() == index.tobytes()
    # Image k is the rendering of photo k in its look, whatever else is in the batch.
    photos = photo_domain(32, 8)
    for k in (0, 13, 799):
        np.testing.assert_array_equal(images[k], style_render(photos[k:k + 1], int(index[k]))[0])
    small, small_index = styled_domain(16, variants=1)
    assert small.shape == (100, 16, 16, 3) and small_index.shape == (100,)


def test_table_spans_tones_line_weights_and_goes_dark_to_light():
    assert len(LOOKS) == 8 and len({look.name for look in LOOKS}) == 8
    assert {look.tones for look in LOOKS} == {2, 3, 4}
    assert {look.line_weight for look in LOOKS} == {0, 1, 2}
    for look in LOOKS:
        luma = np.asarray(look.palette) @ LUMA
        assert np.all(np.diff(luma) > 20), look.name                        # tone 0 = hair/shadow ... highlight
        # The background stands apart from every face tone (visible even without a contour).
        assert np.linalg.norm(np.asarray(look.palette) - look.background, axis=1).min() > 40, look.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        LOOKS[0].line_weight = 2


def test_looks_are_pairwise_distinct(styled32):
    """Mean background and mean face colour per look: every pair of looks differs in both by a clear margin
    (measured minima: 65.8 background, 46.3 face, RGB Euclidean)."""
    images, index = styled32
    inside = face_mask(32, 32)
    face = np.array([images[index == j][:, inside].reshape(-1, 3).mean(0) for j in range(len(LOOKS))])
    back = np.array([images[index == j][:, ~inside].reshape(-1, 3).mean(0) for j in range(len(LOOKS))])
    for i, j in itertools.combinations(range(len(LOOKS)), 2):
        names = (LOOKS[i].name, LOOKS[j].name)
        assert np.linalg.norm(back[i] - back[j]) > 55, names
        assert np.linalg.norm(face[i] - face[j]) > 40, names


@pytest.mark.parametrize("resolution", [32, 64])
def test_each_look_is_consistent_across_faces(photos32, resolution):
    photos = photos32 if resolution == 32 else photo_domain(64, 1)[::4]
    inside = face_mask(resolution, resolution)
    assert 0.15 < (~inside).mean() < 0.4 and not inside[[0, 0, -1, -1], [0, -1, 0, -1]].any()
    for j, look in enumerate(LOOKS):
        out = style_render(photos, j)
        # Background: exactly the look's colour outside the ellipse, every corner of every face included.
        assert (out[:, ~inside] == look.background).all(), look.name
        assert (out[:, [0, 0, -1, -1], [0, -1, 0, -1]] == look.background).all(), look.name
        # Face: only the look's flat tones, and its ink when it has lines; no blended colour anywhere.
        allowed = _rgb_set(*look.palette, *([look.ink] if look.line_weight else []))
        assert _colours(out[:, inside]) <= allowed, look.name
        for im in out:                               # the tone count holds per image: <= tones (+ ink)
            assert len(_colours(im[inside])) <= look.tones + (1 if look.line_weight else 0)
        # Every tone is used on every face (the tone boundaries are quantiles of the face).
        for tone in look.palette:
            assert (out[:, inside] == tone).all(-1).any(-1).all(), (look.name, tone)


def test_tone_shares_follow_the_thresholds(photos32):
    """Without ink, the share of each tone on each face is the gap between the look's quantile thresholds."""
    inside = face_mask(32, 32)
    for look in LOOKS:
        out = style_render(photos32, dataclasses.replace(look, line_weight=0))[:, inside]   # [100,P,3]
        shares = np.stack([(out == tone).all(-1).mean(-1) for tone in look.palette], -1)   # [100,tones]
        want = np.diff(np.concatenate([[0.0], look.thresholds, [1.0]]))
        np.testing.assert_allclose(shares, np.broadcast_to(want, shares.shape), atol=0.02, err_msg=look.name)


def _touches(mask: np.ndarray) -> np.ndarray:
    """bool [..., H, W]: True where a 4-neighbour is True in `mask` (beyond the border: False)."""
    p = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)])
    return p[..., :-2, 1:-1] | p[..., 2:, 1:-1] | p[..., 1:-1, :-2] | p[..., 1:-1, 2:]


def test_line_weight_none_thin_thick(photos32):
    base = LOOKS[0]
    ink = np.asarray(base.ink, np.uint8)
    inside = face_mask(32, 32)
    masks = [(style_render(photos32, dataclasses.replace(base, line_weight=w)) == ink).all(-1) for w in (0, 1, 2)]
    # The contour: the ellipse's outermost face pixels (a 4-neighbour outside) are ink with lines, never without;
    # the next ring in is ink only with thick lines.
    edge = inside & _touches(~inside)
    ring2 = inside & ~edge & _touches(edge)
    assert masks[1][:, edge].all() and masks[2][:, edge].all() and not masks[0][:, edge].any()
    assert masks[2][:, ring2].all() and masks[1][:, ring2].mean() < 0.5
    # The feature lines, away from the contour: none, thin (measured 5.4 % of the pixels), thick (14 %) covering
    # every thin line pixel that is not a lone speck.
    core = inside & ~edge & ~ring2
    share = [m[:, core].mean() for m in masks]
    assert share[0] == 0 and 0.02 < share[1] < 0.15 and share[2] > 2 * share[1]
    lines = masks[1] & core
    assert masks[2][lines & _touches(lines)].all()
    # Only the line pattern changes with the weight: where there is no ink in either, the tones are the same.
    thin, thick = (style_render(photos32, dataclasses.replace(base, line_weight=w)) for w in (1, 2))
    plain = ~masks[1] & ~masks[2]
    np.testing.assert_array_equal(thin[plain], thick[plain])


def test_faces_stay_recognisable(photos32):
    """The rendering keeps the photo's structure: its brightness follows the photo's inside the face."""
    inside = face_mask(32, 32)
    grey = photos32[..., 0][:, inside].astype(np.float64)                   # [100,P]
    for j, look in enumerate(LOOKS):
        lum = (style_render(photos32, j).astype(np.float64) @ LUMA)[:, inside]
        corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(lum, grey)]
        assert np.mean(corr) > 0.5 and np.median(corr) > 0.5, look.name
    # One look does not flatten the faces into one picture: neighbouring faces render clearly differently.
    out = style_render(photos32, 2).astype(np.float64)
    assert np.abs(out[1:] - out[:-1]).mean() > 10


def test_bad_input_is_refused():
    ok = np.zeros((2, 16, 16, 3), np.uint8)
    for bad, match in [(ok.astype(np.float32), "uint8 \\[N,H,W,3\\]; got float32"),
                       (ok[..., 0], "uint8 \\[N,H,W,3\\]; got uint8 \\(2, 16, 16\\)"),
                       (ok[..., :2], "uint8 \\[N,H,W,3\\]"),
                       (np.zeros((2, 4, 4, 3), np.uint8), "at least 8x8 px; got 4x4")]:
        with pytest.raises(ValueError, match=match):
            style_render(bad, 0)
    for look, match in [(8, "index must be in 0..7; got 8"), (-1, "got -1"), (True, "got bool"), ("comic", "got str")]:
        with pytest.raises(ValueError, match=match):
            style_render(ok, look)
    assert style_render(ok, np.int64(3)).shape == ok.shape
    good = dict(name="x", palette=((0, 0, 0), (255, 255, 255)), thresholds=(0.5,), line_weight=1, ink=(0, 0, 0),
                background=(9, 9, 9))
    Look(**good)
    for change, match in [(dict(palette=((0, 0, 0),) * 5, thresholds=(0.2, 0.4, 0.6, 0.8)), "2..4 tones; got 5"),
                          (dict(thresholds=(0.5, 0.7)), "1 increasing values in \\(0, 1\\)"),
                          (dict(thresholds=(1.0,)), "increasing values"),
                          (dict(palette=((0, 0, 0), (255, 256, 0))), "palette must be RGB values in \\[0, 255\\]"),
                          (dict(ink=(0, 0)), "'x' ink must have shape \\[3\\]"),
                          (dict(background=(0, 0, float("nan"))), "background must be RGB values"),
                          (dict(line_weight=3), "line_weight must be 0, 1 or 2; got 3")]:
        with pytest.raises(ValueError, match=match):
            Look(**{**good, **change})
    with pytest.raises(ValueError, match="resolution must be >= 8"):
        styled_domain(4)
