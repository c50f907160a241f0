"""interp.project: the reference schedule's pieces against known values and numpy, and a real projection on a
tiny generator (LPIPS falls, noise maps stay normalised, the loop compiles once)."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _tiny_generator import tiny_generator
from hypothesis import given, settings, strategies as st

from interp import project as P
from nets import images, lpips, sampling
from nets.stylegan2 import Generator, preset

# Projections run with conv_impl='xla': the Winograd path's gradient takes ~4x longer to compile, which a test
# does not need. The weights do not depend on it, so they come from the plain 'tiny' preset, whose init other test
# files compile too (the persistent compile cache then serves it).
CFG = preset("tiny", conv_impl="xla")              # 32 px, num_ws 8, w_dim 32
PC = P.ProjectConfig(steps=30, w_plus=True)        # test_toonify.py projects with the same config (one compile)


@pytest.fixture(scope="module")
def lp():
    return lpips.lpips_params()


@pytest.fixture(scope="module")
def gen():
    return tiny_generator()


@pytest.fixture(scope="module")
def target(gen):
    """An image the generator can make: G(z) for a z it has not seen, with its own const noise."""
    return render_z(gen, 7)


def render_z(g: dict, seed: int) -> np.ndarray:
    """uint8 [32,32,3] G(z) through the projector's own jitted mapping and synthesis (compiled once)."""
    z = np.random.RandomState(seed).randn(1, CFG.z_dim).astype(np.float32)
    w = P._mapper(CFG)(g, z)[:, None]                                                # [1,1,w_dim]
    return images.to_uint8(sampling.render_ws(CFG, g, w)[0])


@pytest.fixture(scope="module")
def projected(gen, target, lp):
    return P.project(CFG, gen, target, PC, lpips_params=lp, seed=3, progress=False)


# ---- schedule --------------------------------------------------------------------------------------------------

def test_schedules_known_values():
    pc = P.ProjectConfig()
    lr = lambda t: float(P.lr_at(t, pc))
    assert lr(0.0) == 0.0 and lr(1.0) == pytest.approx(0.0, abs=1e-9)
    assert lr(0.025) == pytest.approx(0.05)                           # half-way up the 5 % ramp
    assert lr(0.05) == pytest.approx(0.1) and lr(0.5) == pytest.approx(0.1) and lr(0.75) == pytest.approx(0.1)
    assert lr(0.875) == pytest.approx(0.05, rel=1e-5)                 # cos ramp-down half-way
    noise = lambda t: float(P.latent_noise_at(t, pc))
    assert noise(0.0) == pytest.approx(0.05) and noise(0.375) == pytest.approx(0.0125)
    assert noise(0.75) == 0.0 and noise(0.9) == 0.0


@settings(deadline=None, max_examples=25)
@given(t=st.floats(0.0, 1.0), dt=st.floats(0.0, 0.2))
def test_schedules_bounded_and_monotone(t, dt):
    pc = P.ProjectConfig()
    lr = float(P.lr_at(t, pc))
    assert 0.0 <= lr <= 0.1 + 1e-7
    n0, n1 = float(P.latent_noise_at(t, pc)), float(P.latent_noise_at(min(1.0, t + dt), pc))
    assert 0.0 <= n1 <= n0 <= 0.05 + 1e-7


def test_chunk_len_is_the_chunk_unless_the_run_is_shorter():
    assert P.ProjectConfig(steps=1000).chunk_len == 10
    assert P.ProjectConfig(steps=30, chunk=8).chunk_len == 8          # 4 calls, the last one's 2 surplus masked
    assert P.ProjectConfig(steps=13).chunk_len == 10
    assert P.ProjectConfig(steps=4, chunk=10).chunk_len == 4


@pytest.mark.parametrize("kw, msg", [(dict(steps=0), "steps"), (dict(lpips_size=48), "lpips_size"),
                                     (dict(lr_rampup=0.0), "fractions"), (dict(chunk=0), "chunk")])
def test_config_rejects_bad_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        P.ProjectConfig(**kw)


# ---- noise maps ------------------------------------------------------------------------------------------------

def _reg_numpy(maps) -> float:
    total = 0.0
    for n in maps:
        n = np.asarray(n, np.float64)
        while True:
            total += np.mean(n * np.roll(n, 1, axis=1)) ** 2 + np.mean(n * np.roll(n, 1, axis=0)) ** 2
            if n.shape[0] <= 8:
                break
            n = 0.25 * (n[0::2, 0::2] + n[1::2, 0::2] + n[0::2, 1::2] + n[1::2, 1::2])
    return total


def test_noise_regularizer_known_values_and_numpy():
    checker = np.where((np.arange(16)[:, None] + np.arange(16)[None, :]) % 2, 1.0, -1.0).astype(np.float32)
    assert float(P.noise_regularizer({"a": checker})) == pytest.approx(2.0)   # level 16: (-1)²·2; pooled: 0
    assert float(P.noise_regularizer([np.ones((16, 16), np.float32)])) == pytest.approx(4.0)  # levels 16, 8
    assert float(P.noise_regularizer([np.ones((4, 4), np.float32)])) == pytest.approx(2.0)    # one level
    rng = np.random.RandomState(0)
    maps = [rng.randn(r, r).astype(np.float32) for r in (4, 8, 8, 16, 32, 32)]
    assert float(P.noise_regularizer(maps)) == pytest.approx(_reg_numpy(maps), rel=1e-4)


def test_renormalize_gives_zero_mean_unit_variance():
    rng = np.random.RandomState(1)
    out = P.renormalize({"a": rng.randn(8, 8) * 3 + 2, "b": rng.rand(32, 32)})
    for n in jax.tree.leaves(out):
        assert abs(float(jnp.mean(n))) < 1e-5 and float(jnp.mean(jnp.square(n))) == pytest.approx(1.0, rel=1e-5)


def test_noise_maps_are_the_synthesis_buffers(gen):
    maps = P.noise_maps(gen)
    paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(maps)[0]}
    assert paths == {"['b4']['conv1']['noise_const']"} | {f"['b{r}']['conv{i}']['noise_const']"
                                                          for r in (8, 16, 32) for i in (0, 1)}
    bad = {**gen, "buffers": {**gen["buffers"], "synthesis": {"b4": {"conv1": {"other": np.zeros(3)}}}}}
    with pytest.raises(ValueError, match=r"buffers/synthesis/b4/conv1/other is not a \[R,R\] noise_const map"):
        P.noise_maps(bad)


# ---- LPIPS plumbing --------------------------------------------------------------------------------------------

def test_to_lpips_size_box_downsamples_and_upsamples():
    x = np.random.RandomState(2).rand(2, 64, 64, 3).astype(np.float32)
    want = x.reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(P.to_lpips_size(x, 32), want, rtol=1e-6)
    assert P.to_lpips_size(x, 64) is x
    small = x[:, :16, :16]
    up = np.asarray(P.to_lpips_size(small, 256))                                   # 16 px -> 32 px, nearest
    assert up.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(up[:, ::2, ::2], small)
    np.testing.assert_array_equal(up[:, 1::2, 1::2], small)


def test_features_path_equals_lpips_distance(lp):
    rng = np.random.RandomState(3)
    x, y = (rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32) for _ in range(2))   # the projector's shape
    f, from_features = P.lpips_featurizer(P.ProjectConfig()), jax.jit(lpips.lpips_from_features)
    ours = from_features(lp, f(lp, x), f(lp, y))
    ref = jax.jit(lpips.lpips_distance)(lp, x, y)
    np.testing.assert_allclose(ours, ref, rtol=1e-4)
    assert float(from_features(lp, f(lp, x), f(lp, x))[0]) == 0.0


# ---- W statistics ----------------------------------------------------------------------------------------------

def test_w_stats_match_direct_computation(gen):
    n = 300
    w_avg, w_std = P.w_stats(CFG, gen, n)
    z = np.random.RandomState(123).randn(n, CFG.z_dim).astype(np.float32)
    w = np.asarray(Generator(CFG).apply(gen, z, method=Generator.map))[:, 0].astype(np.float64)   # [n,w_dim]
    np.testing.assert_allclose(w_avg, w.mean(0), rtol=1e-5, atol=1e-6)
    assert w_std == pytest.approx(math.sqrt(((w - w.mean(0)) ** 2).sum() / n), rel=1e-5)
    # W+ (JP): the sum runs over num_ws * w_dim dims, every layer equal
    _, w_std_plus = P.w_stats(CFG, gen, n, w_plus=True)
    assert w_std_plus == pytest.approx(w_std * math.sqrt(CFG.num_ws), rel=1e-6)


# ---- the projection --------------------------------------------------------------------------------------------

def test_projection_reduces_lpips(projected):
    p = projected
    assert p.lpips_start > 0.2
    assert p.lpips_final < 0.7 * p.lpips_start, (p.lpips_start, p.lpips_final)   # 0.29 -> 0.16 here
    assert p.dists.shape == p.losses.shape == (PC.steps,) and np.all(np.isfinite(p.losses))
    assert np.mean(p.dists[-5:]) < np.mean(p.dists[:5])
    assert np.all(p.losses >= p.dists)                                    # loss = LPIPS + 1e5 * reg >= LPIPS


def test_projection_outputs_are_consistent(projected, gen, target):
    p = projected
    assert p.w.shape == (1, CFG.num_ws, CFG.w_dim) and p.ws.shape == (1, CFG.num_ws, CFG.w_dim)
    np.testing.assert_array_equal(p.ws, p.w)                               # W+: the variable is the ws
    assert np.std(p.ws[0], axis=0).max() > 0                               # layers moved apart
    np.testing.assert_array_equal(p.target, target)
    for n in jax.tree.leaves(p.noise):                                     # renormalised after the last step
        assert abs(float(n.mean())) < 1e-4 and float((n ** 2).mean()) == pytest.approx(1.0, rel=1e-4)
    img = sampling.render_ws(CFG, P.with_noise(gen, p.noise), p.ws)
    np.testing.assert_array_equal(images.to_uint8(img[0]), p.image)
    # the optimised noise maps are part of the fit: the model's own maps give a different image
    assert np.abs(images.to_uint8(sampling.render_ws(CFG, gen, p.ws)[0]).astype(int) - p.image).max() > 0


def test_projection_loop_compiles_once(projected):
    run_chunk, _ = P.make_runner(CFG, PC)
    assert PC.steps // PC.chunk_len == 3                                   # three calls ...
    assert run_chunk._cache_size() == 1                                    # ... one compiled program


def test_runs_of_other_lengths_share_the_program_and_mask_the_tail(gen, target, lp, projected):
    """13 steps in calls of 10 (the last one's 7 surplus steps masked) on the 30-step run's compiled program: the
    same optimisation as 13 calls of one step."""
    run_chunk, _ = P.make_runner(CFG, PC)
    assert P.make_runner(CFG, dataclasses.replace(PC, steps=13))[0] is run_chunk
    runs = [P.project(CFG, gen, target, P.ProjectConfig(steps=13, w_plus=True, chunk=c), lpips_params=lp, seed=1,
                      progress=False) for c in (10, 1)]
    assert run_chunk._cache_size() == 1                                    # no compile for the 13-step run
    assert runs[0].dists.shape == runs[0].losses.shape == (13,)
    np.testing.assert_allclose(runs[0].w, runs[1].w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runs[0].dists, runs[1].dists, rtol=1e-4)
    assert not np.allclose(runs[0].w, projected.w, atol=1e-3)              # a 13-step run, not the 30-step one


def test_project_rejects_wrong_target(gen, lp):
    with pytest.raises(ValueError, match=r"uint8 \[32, 32, 3\].*got uint8 \[64, 64, 3\]"):
        P.project(CFG, gen, np.zeros((64, 64, 3), np.uint8), PC, lpips_params=lp, progress=False)
    with pytest.raises(ValueError, match="float32"):
        P.project(CFG, gen, np.zeros((32, 32, 3), np.float32), PC, lpips_params=lp, progress=False)


@pytest.mark.slow
def test_w_mode_and_chunking_give_the_same_run(gen, target, lp):
    """W mode; and one step per call vs four steps per call: the same optimisation, bit for bit."""
    runs = [P.project(CFG, gen, target, P.ProjectConfig(steps=8, chunk=c), lpips_params=lp, seed=1,
                      progress=False) for c in (1, 4)]
    assert runs[0].w.shape == (1, 1, CFG.w_dim)
    assert np.ptp(runs[0].ws[0], axis=0).max() == 0                        # one w for every layer
    np.testing.assert_allclose(runs[0].w, runs[1].w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runs[0].dists, runs[1].dists, rtol=1e-4)


# ---- latent files ----------------------------------------------------------------------------------------------

def test_latent_file_round_trip(projected, tmp_path):
    path = P.save_latent(tmp_path / "w.npz", projected)
    np.testing.assert_array_equal(P.load_latent(path, CFG), projected.ws)
    with np.load(path) as f:
        assert f["w"].shape == (1, CFG.num_ws, CFG.w_dim) and bool(f["w_plus"])
        np.testing.assert_array_equal(f["noise/b16/conv0"], projected.noise["b16"]["conv0"]["noise_const"])
        np.testing.assert_array_equal(f["dists"], projected.dists)
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]                # no temp file left behind
    np.savez(tmp_path / "nv.npz", w=projected.ws[0])                         # [num_ws,w_dim] is accepted too
    np.testing.assert_array_equal(P.load_latent(tmp_path / "nv.npz", CFG), projected.ws)


def test_load_latent_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        P.load_latent(tmp_path / "missing.npz", CFG)
    np.savez(tmp_path / "shape.npz", w=np.zeros((1, 18, 512), np.float32))
    with pytest.raises(ValueError, match=r"shape.npz: 'w' has shape \[1, 18, 512\].*\[1, 8, 32\]"):
        P.load_latent(tmp_path / "shape.npz", CFG)
    np.savez(tmp_path / "nokey.npz", z=np.zeros(3))
    with pytest.raises(ValueError, match=r"nokey.npz has no array 'w' \(keys: \['z'\]\)"):
        P.load_latent(tmp_path / "nokey.npz", CFG)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="junk.npz is not a readable .npz"):
        P.load_latent(tmp_path / "junk.npz", CFG)
    np.savez(tmp_path / "nan.npz", w=np.full((1, 8, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        P.load_latent(tmp_path / "nan.npz", CFG)
