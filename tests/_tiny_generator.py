"""A tiny generator whose noise inputs matter, shared by the projector, toonify and sampling tests."""
import jax
import numpy as np

from nets import paths
from nets.stylegan2 import init_generator, preset


def tiny_generator(seed: int = 0, noise_strength: float = 0.3) -> dict:
    """A tiny G whose noise inputs matter (fresh generators have noise_strength 0)."""
    g = jax.tree.map(np.asarray, init_generator(preset("tiny"), jax.random.key(seed)))
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: np.full_like(x, noise_strength) if paths.leaf_name(p) == paths.NOISE_STRENGTH else x,
        g["params"])
    return {"params": params, "buffers": g["buffers"]}
