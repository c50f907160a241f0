"""Render generator samples for fixed seeds (one jitted call per batch) and write PNG grids."""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nets import images, modelfile
from nets.stylegan2 import Generator, StyleGAN2Config, init_generator, preset


def z_from_seeds(seeds: list[int], z_dim: int) -> np.ndarray:
    """One N(0, I) latent per seed, independent of batch composition (numpy RandomState, as NV generate.py)."""
    return np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds]).astype(np.float32)


def load_generator(path: str) -> tuple[StyleGAN2Config, dict]:
    mf = modelfile.load_model(path)
    if mf.arch != "stylegan2" or "G" not in mf.variables:
        raise modelfile.ModelFileError(f"{path} holds no StyleGAN2 generator 'G' (arch {mf.arch!r}, "
                                       f"entries {sorted(mf.variables)})")
    return StyleGAN2Config.from_dict(mf.config), mf.variables["G"]


@functools.lru_cache(maxsize=16)
def _render_fn(cfg: StyleGAN2Config, psi: float, noise_mode: str):
    """One jitted sampler per (config, psi, noise mode): repeated renders do not re-trace or recompile."""
    return jax.jit(lambda v, z, k: Generator(cfg).apply(v, z, psi=psi, noise_mode=noise_mode, rngs={"noise": k}))


def render(cfg: StyleGAN2Config, g_vars: dict, z: np.ndarray, psi: float = 1.0, noise_mode: str = "const",
           batch: int = 8, seed: int = 0) -> np.ndarray:
    """z [N,z_dim] -> uint8 images [N,R,R,3], in batches through one compiled function."""
    fn = _render_fn(cfg, float(psi), noise_mode)
    out = []
    for i in range(0, len(z), batch):
        zb = z[i:i + batch]
        pad = batch - len(zb)   # keep one shape so nothing recompiles
        zb = np.concatenate([zb, np.zeros((pad, zb.shape[1]), zb.dtype)]) if pad else zb
        img = fn(g_vars, jnp.asarray(zb), jax.random.fold_in(jax.random.key(seed), i))
        out.append(images.to_uint8(img)[:batch - pad])
    return np.concatenate(out)


def sample_grid(model: str | None, preset_name: str = "tiny", resolution: int | None = None,
                seeds: list[int] = tuple(range(16)), psi: float = 1.0, noise_mode: str = "const",
                out: str = "out/samples.png") -> Path:
    if model:
        cfg, g_vars = load_generator(model)
    else:
        cfg = preset(preset_name, **({"resolution": resolution} if resolution else {}))
        g_vars = init_generator(cfg, jax.random.key(0))
    imgs = render(cfg, g_vars, z_from_seeds(list(seeds), cfg.z_dim), psi=psi, noise_mode=noise_mode)
    return images.write_png(out, images.make_grid(imgs))
