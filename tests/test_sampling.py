"""nets.sampling: the one jitted StyleGAN2 renderer (from z and from ws, compiled once per argument set), seeds,
and nets.stylegan2.without_noise."""
import jax
import numpy as np
import pytest

from _tiny_generator import tiny_generator
from nets import sampling
from nets.stylegan2 import Generator, preset, without_noise

CFG = preset("tiny")
# The references call the Flax module directly, jitted (eagerly every op of a StyleGAN2 forward compiles on its
# own); both tests render three seeds, so the one [3,z_dim] program serves both.
apply_g = jax.jit(Generator(CFG).apply, static_argnames=("noise_mode", "method"))


def test_parse_seeds():
    assert sampling.parse_seeds("0-3, 7,9-9") == [0, 1, 2, 3, 7, 9]
    with pytest.raises(ValueError, match=r"seeds '1,x': 'x' is not a number or a range"):
        sampling.parse_seeds("1,x")
    with pytest.raises(ValueError, match="no seeds in ' , '"):
        sampling.parse_seeds(" , ")


def test_render_compiles_once_for_every_tree_and_batch():
    g0, g1 = tiny_generator(0), tiny_generator(1)
    fn = sampling.render_fn(CFG, 1.0, "const", "z")
    before = fn._cache_size()
    a = sampling.sample(CFG, g0, [0, 1, 2])                                    # padded to one batch of 8
    b = sampling.sample(CFG, g1, list(range(11)))                              # two batches, the last padded
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8 and b.shape == (11, 32, 32, 3)
    assert fn._cache_size() - before <= 1                                      # one program for both trees
    assert sampling.render_fn(CFG, 1.0, "const", "z") is fn                    # cached per argument set
    np.testing.assert_array_equal(b[:3], sampling.sample(CFG, g1, [0, 1, 2]))  # seeds, not batch, decide
    z = sampling.z_from_seeds([0, 1, 2], CFG.z_dim)
    ref = apply_g(g0, z, noise_mode="const")
    np.testing.assert_allclose(a.astype(int), np.clip(np.rint((np.asarray(ref) + 1) * 127.5), 0, 255), atol=1)


def test_render_ws_is_the_synthesis_of_mapped_z():
    g = tiny_generator(0)
    z = sampling.z_from_seeds([4, 5, 6], CFG.z_dim)
    w = apply_g(g, z, method=Generator.map)                                     # [3,num_ws,w_dim]
    direct = apply_g(g, z, noise_mode="const")
    np.testing.assert_allclose(sampling.render_ws(CFG, g, w), direct, atol=1e-5)
    np.testing.assert_allclose(sampling.render_ws(CFG, g, w[:, :1]), direct, atol=1e-5)   # [N,1,w_dim] broadcast
    with pytest.raises(ValueError, match="psi 0.5 applies to z"):
        sampling.render_fn(CFG, 0.5, "const", "ws")
    with pytest.raises(ValueError, match="'z' or 'ws'; got 'w'"):
        sampling.render_fn(CFG, 1.0, "const", "w")


def test_without_noise_zeroes_noise_strength_only():
    g = tiny_generator(0, noise_strength=0.3)
    quiet = without_noise(g)
    flat_g = dict(jax.tree_util.tree_flatten_with_path(g)[0])
    for path, x in jax.tree_util.tree_flatten_with_path(quiet)[0]:
        if path[-1].key == "noise_strength":
            assert isinstance(x, np.ndarray) and x.shape == () and x == 0
        else:
            assert x is flat_g[path]                                             # shared, not copied
    assert sum(p[-1].key == "noise_strength" for p in flat_g) == 7               # b4: conv1; b8..b32: conv0, conv1
    seeds = [0, 1]
    np.testing.assert_array_equal(sampling.sample(CFG, quiet, seeds), sampling.sample(CFG, quiet, seeds,
                                                                                       noise_mode="none"))
    assert np.any(sampling.sample(CFG, g, seeds) != sampling.sample(CFG, g, seeds, noise_mode="none"))
