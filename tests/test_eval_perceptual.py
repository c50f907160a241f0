"""train/eval/perceptual.py's PPL on a tiny StyleGAN2: zero for a generator that ignores its latent, finite and
positive for a random one, LPIPS / eps² stable as eps shrinks (LPIPS is quadratic in a small change), the
sampling and crop settings, slerp, and the size check."""
import dataclasses

import jax
import numpy as np
import pytest

from nets import lpips, modelfile, stylegan2
from train.eval import fakes, perceptual


@pytest.fixture(scope="module")
def lp():
    return lpips.lpips_params()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cfg = stylegan2.preset("tiny", resolution=16)
    path = tmp_path_factory.mktemp("ppl") / "m"
    modelfile.save_model(path, stylegan2.init_model(cfg, jax.random.key(0)), cfg)
    return fakes.load(str(path))


def ppl(model, lp, name="ppl2_wend", num=8, **kw):
    eps, space, sampling, crop, batch = perceptual.PPL_METRICS[name]
    args = dict(epsilon=eps, space=space, sampling_mode=sampling, crop=crop, batch=batch)
    args.update(kw)
    return perceptual.ppl(model, num, progress=False, lpips_params=lp, **args)


def test_a_generator_that_ignores_its_latent_has_zero_ppl(model, lp):
    g = jax.tree.map(np.array, model.g_vars)
    last = g["params"]["mapping"][f"fc{model.cfg.mapping_layers - 1}"]
    last["kernel"] = np.zeros_like(last["kernel"])                      # w no longer depends on z
    flat = dataclasses.replace(model, g_vars=g)
    assert ppl(flat, lp) == pytest.approx(0.0, abs=1e-6)                 # the noise is shared within a pair
    assert ppl(flat, lp, space="z", sampling_mode="full") == pytest.approx(0.0, abs=1e-6)


def test_ppl_is_positive_and_lpips_over_eps_squared_is_stable(model, lp):
    values = {eps: ppl(model, lp, epsilon=eps) for eps in (1e-2, 1e-3)}
    print("ppl2_wend at eps 1e-2, 1e-3:", values)
    assert all(np.isfinite(v) and v > 0 for v in values.values())
    assert values[1e-3] == pytest.approx(values[1e-2], rel=0.2)          # the quadratic regime
    assert ppl(model, lp, epsilon=1e-2) == values[1e-2]                   # seeded: the same pairs each call
    assert ppl(model, lp, epsilon=1e-2, seed=1) != values[1e-2]


def test_slerp_stays_on_the_sphere_between_its_ends():
    rng = np.random.RandomState(0)
    a, b = rng.randn(5, 7).astype(np.float32), rng.randn(5, 7).astype(np.float32)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)      # noqa: E731
    for t in (0.0, 0.3, 1.0):
        out = np.asarray(perceptual.slerp(a, b, np.full((5, 1), t, np.float32)))
        np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1, atol=1e-5)
        ang = np.arccos(np.clip(np.sum(unit(a) * out, -1), -1, 1))
        full = np.arccos(np.clip(np.sum(unit(a) * unit(b), -1), -1, 1))
        np.testing.assert_allclose(ang, t * full, atol=1e-3)


def test_crop_and_downsample_and_the_size_check(model, lp):
    img = np.arange(2 * 512 * 512, dtype=np.float32).reshape(2, 512, 512, 1)
    out = np.asarray(perceptual.crop_and_downsample(img, crop=True))     # rows 3/8..7/8, cols 2/8..6/8, then /2
    assert out.shape == (2, 128, 128, 3)
    np.testing.assert_allclose(out[0, 0, 0, 0], img[0, 192:194, 128:130, 0].mean())
    with pytest.raises(ValueError, match="at least 16"):
        ppl(model, lp, "ppl_wend")                                         # 16 px cropped to 8
