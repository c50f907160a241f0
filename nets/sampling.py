"""The one StyleGAN2 renderer: a cached jitted generator call per (config, psi, noise mode, input kind), seeds, grids.

Everything that renders a StyleGAN2 generator goes through `render_fn`: sample grids and the blend figure (from z),
the projector's start and final images and Toonify's render through a blended model (from ws). Trees of one
structure (two parents, every blend of them) share one compiled program, and `render` pads the last batch, so
nothing recompiles in a loop over models or seeds.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from nets import images
from nets.layers import NoiseMode
from nets.stylegan2 import Generator, StyleGAN2Config

Kind = Literal["z", "ws"]


def parse_seeds(spec: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    for part in filter(None, (s.strip() for s in spec.split(","))):
        a, sep, b = part.partition("-")
        try:
            seeds.extend(range(int(a), int(b) + 1) if sep else [int(a)])
        except ValueError:
            raise ValueError(f"seeds {spec!r}: {part!r} is not a number or a range A-B (e.g. '0-15' or '1,5,9')"
                             ) from None
    if not seeds:
        raise ValueError(f"no seeds in {spec!r}")
    return seeds


def z_from_seeds(seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """One N(0, I) latent per seed, independent of batch composition (numpy RandomState, as NV generate.py)."""
    return np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds]).astype(np.float32)


def synthesize(cfg: StyleGAN2Config, g_vars: dict, w: jax.Array, noise_mode: NoiseMode = "const",
               key: jax.Array | None = None) -> jax.Array:
    """w [N,k,w_dim] (k = 1 or num_ws, broadcast to num_ws) -> images [N,R,R,C] through the synthesis network.

    Pure and differentiable (the projector's loss calls it inside its own jit); `key` feeds noise_mode 'random'."""
    ws = jnp.broadcast_to(w, (w.shape[0], cfg.num_ws, cfg.w_dim))                   # [N,num_ws,w_dim]
    rngs = {} if key is None else {"noise": key}
    return Generator(cfg).apply(g_vars, ws, noise_mode=noise_mode, method=Generator.synthesize, rngs=rngs)


@functools.lru_cache(maxsize=32)
def render_fn(cfg: StyleGAN2Config, psi: float = 1.0, noise_mode: NoiseMode = "const", kind: Kind = "z"):
    """jit((g_vars, x, key) -> float images [N,R,R,C]); x is z [N,z_dim] or, for kind 'ws', w [N,k,w_dim].

    One compiled function per argument set (cached), so repeated renders do not re-trace. psi truncates z's
    mapping; ws are taken as given."""
    if kind == "z":
        def fn(v, z, key):
            rngs = {} if key is None else {"noise": key}
            return Generator(cfg).apply(v, z, psi=psi, noise_mode=noise_mode, rngs=rngs)
    elif kind == "ws":
        if psi != 1.0:
            raise ValueError(f"psi {psi} applies to z; ws are rendered as given (truncate them before)")
        def fn(v, w, key):
            return synthesize(cfg, v, w, noise_mode, key)
    else:
        raise ValueError(f"render input kind must be 'z' or 'ws'; got {kind!r}")
    return jax.jit(fn)


def render(cfg: StyleGAN2Config, g_vars: dict, z: np.ndarray, psi: float = 1.0, noise_mode: NoiseMode = "const",
           batch: int = 8, seed: int = 0) -> np.ndarray:
    """z [N,z_dim] -> uint8 images [N,R,R,C], in batches through one compiled function."""
    fn = render_fn(cfg, float(psi), noise_mode, "z")
    out = []
    for i in range(0, len(z), batch):
        zb = z[i:i + batch]
        pad = batch - len(zb)   # keep one shape so nothing recompiles
        zb = np.concatenate([zb, np.zeros((pad, zb.shape[1]), zb.dtype)]) if pad else zb
        img = fn(g_vars, jnp.asarray(zb), jax.random.fold_in(jax.random.key(seed), i))
        out.append(images.to_uint8(img)[:batch - pad])
    return np.concatenate(out)


def render_ws(cfg: StyleGAN2Config, g_vars: dict, w: np.ndarray | jax.Array, noise_mode: NoiseMode = "const",
              key: jax.Array | None = None) -> jax.Array:
    """w [N,k,w_dim] -> float images [N,R,R,C] in about [-1, 1] (the vars' const noise unless noise_mode says)."""
    return render_fn(cfg, 1.0, noise_mode, "ws")(g_vars, jnp.asarray(w), key)


def sample(cfg: StyleGAN2Config, g_vars: dict, seeds: Sequence[int], *, psi: float = 1.0,
           noise_mode: NoiseMode = "const") -> np.ndarray:
    """uint8 [N,R,R,C] images for fixed seeds (the registry's `sample` for StyleGAN2)."""
    return render(cfg, g_vars, z_from_seeds(seeds, cfg.z_dim), psi=psi, noise_mode=noise_mode)


def load_generator(path: str) -> tuple[StyleGAN2Config, dict]:
    """(config, G variables) of a StyleGAN2 model file; nets.registry.load_generator for any family."""
    from nets import registry   # the registry imports this module for StyleGAN2's renderer

    _, cfg, g_vars = registry.load_generator(path, "stylegan2")
    return cfg, g_vars


def sample_grid(model: str | None, preset_name: str = "tiny", resolution: int | None = None,
                seeds: Sequence[int] = tuple(range(16)), psi: float = 1.0, noise_mode: NoiseMode = "const",
                out: str = "out/samples.png", arch: str = "stylegan2") -> Path:
    """`gafu sample`: a PNG grid of a model file's generator (any registered family), or of a fresh preset."""
    from nets import registry   # the registry imports this module for StyleGAN2's renderer

    if model:
        fam, cfg, g_vars = registry.load_generator(model)
    else:
        fam = registry.get(arch)
        cfg = fam.presets(preset_name, **({"resolution": resolution} if resolution else {}))
        g_vars = fam.init(cfg, jax.random.key(0))[fam.generator]
    imgs = fam.sample(cfg, g_vars, list(seeds), psi=psi, noise_mode=noise_mode)
    return images.write_png(out, images.make_grid(imgs))
