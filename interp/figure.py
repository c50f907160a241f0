"""The layer-swapping figure (Toonify paper, Fig. 1): samples of a blend at every swap resolution (rows) for fixed
seeds (columns), framed by the two parents.

All rows share one tree structure, so one jitted render function serves every row: nothing recompiles.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nets import images
from nets.sampling import z_from_seeds
from nets.stylegan2 import Generator, StyleGAN2Config

PyTree = Any


def make_renderer(cfg: StyleGAN2Config, psi: float = 1.0) -> Callable[[PyTree, np.ndarray], np.ndarray]:
    """(G variables, z [N,z_dim]) -> uint8 images [N,R,R,3], const noise, compiled once per shape."""
    fn = jax.jit(lambda v, z: Generator(cfg).apply(v, z, psi=psi, noise_mode="const"))

    def render(g_vars: PyTree, z: np.ndarray) -> np.ndarray:
        return images.to_uint8(fn(g_vars, jnp.asarray(z)))
    return render


def render_rows(cfg: StyleGAN2Config, variants: Iterable[PyTree], seeds: Sequence[int],
                psi: float = 1.0) -> np.ndarray:
    """One row of samples per generator variant: uint8 [rows, len(seeds), R, R, 3].

    `variants` may be a generator, so each blended tree can be built, rendered and dropped in turn.
    """
    render = make_renderer(cfg, psi)
    z = z_from_seeds(list(seeds), cfg.z_dim)                                    # [N, z_dim]
    return np.stack([render(v, z) for v in variants])


def swap_figure(cfg: StyleGAN2Config, low: PyTree, high: PyTree, blend_at: Callable[[int], PyTree],
                swap_resolutions: Sequence[int], seeds: Sequence[int], psi: float = 1.0) -> np.ndarray:
    """Grid rows: the low parent, blend_at(r) for r in swap_resolutions (in the given order), the high parent."""
    def variants():
        yield low
        for r in swap_resolutions:
            yield blend_at(r)
        yield high
    rows = render_rows(cfg, variants(), seeds, psi)                              # [rows, cols, R, R, 3]
    return images.make_grid(rows)
