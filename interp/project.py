"""Project an image into a StyleGAN2 generator's W or W+ space (Karras et al. 2020, §5 / Appendix D).

Reference: NVlabs/stylegan2-ada-pytorch `projector.py` (W) and Pinkney's Toonify projector (W+,
justinpinkney/stylegan2 `projector.py` as run by the Toonify notebook):

  * w_avg and a scalar w_std = sqrt(sum_i ||w_i - w_avg||² / N) from 10,000 mapped z (RandomState(123)); the sum
    runs over the optimised variable's dims (w_dim in W, num_ws*w_dim in W+, as JP's projector);
  * the variable starts at w_avg ([1,1,w_dim] in W, [1,num_ws,w_dim] in W+) and is optimised together with every
    noise_const map (re-initialised N(0,1)) by Adam(0.9, 0.999), lr 0.1 with a 5 % linear ramp-up and a cosine
    ramp-down over the last 25 %; latent noise w_std * 0.05 * max(0, 1 - t/0.75)² is added before synthesis;
  * loss = LPIPS-VGG(synth, target) (target features computed once) + 1e5 * sum over noise maps and pyramid levels
    (2x2 average pooling down to 8x8) of mean(n * roll(n, 1, x))² + mean(n * roll(n, 1, y))²;
  * after every step each noise map is renormalised to zero mean and unit variance.

LPIPS sees images box-downsampled to `lpips_size` (256) when the generator is larger and, for generators under
32 px, nearest-upsampled to 32 px (VGG-16 pools four times before relu5_3, which must keep at least 2x2).
The loop is jitted once: a `lax.scan` over a chunk of steps, with the step index and the run's length traced,
called from Python once per chunk so that a tqdm bar can advance. A last chunk that would run past the end masks
its surplus steps, so runs of any length (at least one chunk) share one compiled program.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import math
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from nets import images, lpips, paths, sampling
from nets.stylegan2 import Generator, StyleGAN2Config

Array = jax.Array
PyTree = Any
W_STATS_SEED = 123          # NV projector.py: np.random.RandomState(123)
MIN_LPIPS_SIZE = 32         # relu5_3 sits after four 2x2 pools


@dataclasses.dataclass(frozen=True)
class ProjectConfig:
    """The reference schedule (NV projector.py defaults; JP's Toonify uses w_plus=True, steps=500)."""
    steps: int = 1000
    w_plus: bool = False              # optimise one w per layer ([1,num_ws,w_dim]) instead of one shared w
    lr: float = 0.1                   # initial (peak) learning rate
    lr_rampup: float = 0.05           # fraction of steps of linear ramp-up
    lr_rampdown: float = 0.25         # fraction of steps of cosine ramp-down at the end
    noise_scale: float = 0.05         # initial latent noise, in units of w_std
    noise_ramp: float = 0.75          # latent noise fades (quadratically) to 0 over this fraction of steps
    noise_reg: float = 1e5            # weight of the noise-map autocorrelation penalty
    optimize_noise: bool = True       # False: keep the generator's own noise maps fixed
    w_avg_samples: int = 10000
    lpips_size: int = 256             # larger images are box-downsampled to this before LPIPS
    chunk: int = 10                   # steps per jitted call (fewer only for runs shorter than this)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"projection steps must be >= 1; got {self.steps}")
        if not 0 < self.lr_rampup <= 1 or not 0 < self.lr_rampdown <= 1 or not 0 < self.noise_ramp <= 1:
            raise ValueError("lr_rampup, lr_rampdown and noise_ramp are fractions of the run in (0, 1]; got "
                             f"{self.lr_rampup}, {self.lr_rampdown}, {self.noise_ramp}")
        if self.w_avg_samples < 2:
            raise ValueError(f"w_avg_samples must be >= 2; got {self.w_avg_samples}")
        if self.lpips_size < MIN_LPIPS_SIZE or self.lpips_size & (self.lpips_size - 1):
            raise ValueError(f"lpips_size must be a power of two >= {MIN_LPIPS_SIZE}; got {self.lpips_size}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1; got {self.chunk}")

    @property
    def chunk_len(self) -> int:
        """Steps per jitted call: `chunk`, or `steps` if fewer. A last call that would run past `steps` leaves its
        surplus steps masked (they change nothing), so runs of any length >= chunk share one compiled program."""
        return min(self.chunk, self.steps)


# ----------------------------------------------------------------------------------------------------------------
# Pieces (pure, jit-friendly)


def lr_at(t: Array | float, pc: ProjectConfig) -> Array:
    """Learning rate at run fraction t = step / steps (NV: lr * min(1, t/0.05) * cosine ramp-down)."""
    t = jnp.asarray(t, jnp.float32)
    down = 0.5 - 0.5 * jnp.cos(jnp.pi * jnp.minimum(1.0, (1.0 - t) / pc.lr_rampdown))
    return pc.lr * down * jnp.minimum(1.0, t / pc.lr_rampup)


def latent_noise_at(t: Array | float, pc: ProjectConfig) -> Array:
    """Latent noise scale (in units of w_std) at run fraction t: 0.05 * max(0, 1 - t/0.75)²."""
    t = jnp.asarray(t, jnp.float32)
    return pc.noise_scale * jnp.square(jnp.maximum(0.0, 1.0 - t / pc.noise_ramp))


def noise_regularizer(noise: PyTree) -> Array:
    """sum over maps n [R,R] and levels (2x2 mean pooling while > 8 px) of mean(n·roll_x(n))² + mean(n·roll_y(n))²."""
    reg = jnp.zeros((), jnp.float32)
    for n in jax.tree.leaves(noise):
        while True:
            reg = reg + jnp.square(jnp.mean(n * jnp.roll(n, 1, axis=1))) \
                + jnp.square(jnp.mean(n * jnp.roll(n, 1, axis=0)))
            if n.shape[0] <= 8:
                break
            r = n.shape[0] // 2
            n = n.reshape(r, 2, r, 2).mean(axis=(1, 3))                             # [R/2,R/2]
    return reg


def renormalize(noise: PyTree) -> PyTree:
    """Every noise map to zero mean, unit (biased) variance, as NV does after each step."""
    def one(n):
        n = n - jnp.mean(n)
        return n * lax.rsqrt(jnp.mean(jnp.square(n)))
    return jax.tree.map(one, noise)


def to_lpips_size(x: Array, size: int) -> Array:
    """[N,R,R,C] -> [N,S,S,C] with S = min(R, size), box-downsampled, then at least 32 px (nearest upsampling)."""
    r = x.shape[1]
    if r > size:
        f = r // size
        x = x.reshape(x.shape[0], size, f, size, f, x.shape[-1]).mean(axis=(2, 4))  # [N,S,S,C]
    elif r < MIN_LPIPS_SIZE:
        f = MIN_LPIPS_SIZE // r
        x = jnp.repeat(jnp.repeat(x, f, axis=1), f, axis=2)                          # [N,32,32,C]
    return x


def noise_maps(g_vars: dict) -> dict:
    """The generator's noise_const tree (buffers/synthesis), checked to hold nothing else."""
    try:
        tree = g_vars[paths.BUFFERS]["synthesis"]
    except (KeyError, TypeError):
        raise ValueError("generator variables have no buffers/synthesis (noise_const maps); expected "
                         "{'params': ..., 'buffers': {'mapping': ..., 'synthesis': ...}}") from None
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if paths.leaf_name(path) != paths.NOISE_CONST or paths.resolution_of(path) is None or np.ndim(x) != 2:
            raise ValueError(f"buffers/synthesis/{paths.path_str(path)} is not a [R,R] {paths.NOISE_CONST} map "
                             f"in a block (shape {list(np.shape(x))})")
    return tree


def with_noise(g_vars: dict, noise: PyTree) -> dict:
    """Generator variables with their noise maps replaced."""
    return {**g_vars, "buffers": {**g_vars["buffers"], "synthesis": noise}}


# ----------------------------------------------------------------------------------------------------------------
# W statistics


@functools.lru_cache(maxsize=8)
def _mapper(cfg: StyleGAN2Config):
    return jax.jit(lambda v, z: Generator(cfg).apply(v, z, method=Generator.map)[:, 0])  # [N,w_dim]


def w_stats(cfg: StyleGAN2Config, g_vars: dict, n: int = 10000, w_plus: bool = False,
            seed: int = W_STATS_SEED) -> tuple[np.ndarray, float]:
    """(w_avg [w_dim], w_std) from n mapped z. w_std sums over w_dim dims, or num_ws*w_dim in W+ (JP)."""
    z = np.random.RandomState(seed).randn(n, cfg.z_dim).astype(np.float32)
    w = np.asarray(_mapper(cfg)({"params": g_vars["params"], "buffers": g_vars["buffers"]}, z), np.float64)
    w_avg = w.mean(axis=0)                                                          # [w_dim]
    w_std = math.sqrt(np.sum(np.square(w - w_avg)) / n)
    if w_plus:      # all num_ws layers of a mapped w are equal, so the W+ sum is num_ws times the W sum
        w_std *= math.sqrt(cfg.num_ws)
    return w_avg.astype(np.float32), w_std


# ----------------------------------------------------------------------------------------------------------------
# The jitted loop


def _loss(var: dict, w_noise: Array, consts: dict, cfg: StyleGAN2Config, pc: ProjectConfig):
    g_vars = with_noise(consts["g"], var["noise"])
    img = sampling.synthesize(cfg, g_vars, var["w"] + w_noise)                     # [1,R,R,3], const noise
    f = lpips.lpips_features(consts["lpips"], to_lpips_size(img, pc.lpips_size))
    dist = lpips.lpips_from_features(consts["lpips"], f, consts["target"])[0]
    reg = noise_regularizer(var["noise"])
    return dist + pc.noise_reg * reg, (dist, reg)


def make_runner(cfg: StyleGAN2Config, pc: ProjectConfig):
    """jit(run_chunk)(var, opt_state, start, consts) -> (var, opt_state, dists [chunk], losses [chunk]).

    The run's length is `consts["steps"]` (int32), traced: one program serves every run of at least `chunk` steps
    (the web page's and the CLI's step counts), its steps from `steps` on masked. Their dists/losses are junk."""
    return _make_runner(cfg, dataclasses.replace(pc, steps=pc.chunk_len))


@functools.lru_cache(maxsize=8)
def _make_runner(cfg: StyleGAN2Config, pc: ProjectConfig):
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    grad_fn = jax.value_and_grad(functools.partial(_loss, cfg=cfg, pc=pc), has_aux=True)

    def run_chunk(var, opt_state, start, consts):
        def step(carry, i):
            var, opt_state = carry
            t = i.astype(jnp.float32) / consts["steps"].astype(jnp.float32)
            scale = consts["w_std"] * latent_noise_at(t, pc)
            w_noise = jax.random.normal(jax.random.fold_in(consts["key"], i), var["w"].shape) * scale
            (loss, (dist, _)), g = grad_fn(var, w_noise, consts)
            if not pc.optimize_noise:
                g = {**g, "noise": jax.tree.map(jnp.zeros_like, g["noise"])}
            upd, opt_state = adam.update(g, opt_state, var)
            var = optax.apply_updates(var, jax.tree.map(lambda u: -lr_at(t, pc) * u, upd))
            if pc.optimize_noise:
                var = {**var, "noise": renormalize(var["noise"])}
            live = i < consts["steps"]                                   # False past the run's end: no change
            carry = jax.tree.map(lambda a, b: jnp.where(live, a, b), (var, opt_state), carry)
            return carry, (dist, loss)

        steps = start + jnp.arange(pc.chunk_len)                                  # [chunk] traced step indices
        (var, opt_state), (dists, losses) = lax.scan(step, (var, opt_state), steps)
        return var, opt_state, dists, losses

    return jax.jit(run_chunk, donate_argnums=(0, 1)), adam


@functools.lru_cache(maxsize=8)
def lpips_featurizer(pc: ProjectConfig):
    """jit(f)(lpips_params, images [N,R,R,3] in [-1, 1]) -> nets.lpips features at the projector's LPIPS size."""
    return jax.jit(lambda p, x: lpips.lpips_features(p, to_lpips_size(x, pc.lpips_size)))


# ----------------------------------------------------------------------------------------------------------------
# Driver


@dataclasses.dataclass
class Projection:
    ws: np.ndarray              # [1,num_ws,w_dim] float32: what the synthesis network takes (NV's projected_w)
    w: np.ndarray               # the optimised variable [1,1,w_dim] (W) or [1,num_ws,w_dim] (W+)
    noise: PyTree               # optimised noise maps (buffers/synthesis tree), numpy
    image: np.ndarray           # uint8 [R,R,3]: ws rendered with the optimised noise
    target: np.ndarray          # uint8 [R,R,3]
    dists: np.ndarray           # [steps] LPIPS at each step (with that step's latent noise)
    losses: np.ndarray          # [steps] LPIPS + noise_reg * reg
    lpips_start: float          # LPIPS of the w_avg start (initial noise), no latent noise
    lpips_final: float          # LPIPS of the result, no latent noise
    w_plus: bool


def project(cfg: StyleGAN2Config, g_vars: dict, target: np.ndarray, pc: ProjectConfig = ProjectConfig(), *,
            lpips_params: dict | None = None, seed: int = 0, progress: bool = True) -> Projection:
    """Find ws such that the generator renders `target` (uint8 [R,R,3] at the generator's resolution)."""
    from tqdm.auto import tqdm

    target = np.asarray(target)
    want = (cfg.resolution, cfg.resolution, cfg.img_channels)
    if target.shape != want or target.dtype != np.uint8:
        raise ValueError(f"projection target must be uint8 {list(want)} (the generator's resolution); got "
                         f"{target.dtype} {list(target.shape)} (gafu's prepare_photo crops and resizes photos)")
    lp = lpips_params if lpips_params is not None else lpips.lpips_params()
    noise0 = noise_maps(g_vars)
    w_avg, w_std = w_stats(cfg, g_vars, pc.w_avg_samples, pc.w_plus)
    key = jax.random.key(seed)
    k_noise, k_lat = jax.random.split(key)
    if pc.optimize_noise:       # NV re-initialises every noise map N(0, 1) before optimising it
        leaves, treedef = jax.tree.flatten(noise0)
        ks = jax.random.split(k_noise, len(leaves))
        noise0 = jax.tree.unflatten(treedef, [jax.random.normal(k, np.shape(x)) for k, x in zip(ks, leaves)])
    k = cfg.num_ws if pc.w_plus else 1
    w0 = jnp.broadcast_to(jnp.asarray(w_avg)[None, None, :], (1, k, cfg.w_dim))     # [1,k,w_dim]
    x = jnp.asarray(images.from_uint8(target))[None]                               # [1,R,R,3]
    lp = lpips.with_dx_kernels(jax.tree.map(jnp.asarray, lp))           # formed once, not in every step
    feats = lpips_featurizer(pc)
    consts = {"g": jax.tree.map(jnp.asarray, g_vars), "lpips": lp, "target": feats(lp, x),
              "w_std": jnp.float32(w_std), "key": k_lat, "steps": jnp.int32(pc.steps)}
    def evaluate(w, noise):     # (image, LPIPS) without latent noise
        img = sampling.render_ws(cfg, with_noise(consts["g"], noise), w)
        return img, lpips.lpips_from_features(lp, feats(lp, img), consts["target"])[0]

    _, d_start = evaluate(w0, noise0)
    run_chunk, adam = make_runner(cfg, pc)
    var = {"w": jnp.array(w0), "noise": jax.tree.map(jnp.array, noise0)}
    opt_state = adam.init(var)
    dists, losses, pending = [], [], None
    mode = "W+" if pc.w_plus else "W"
    with tqdm(total=pc.steps, desc=f"project {mode}", unit="step", disable=not progress) as bar:
        for start in range(0, pc.steps, pc.chunk_len):
            var, opt_state, d, l = run_chunk(var, opt_state, jnp.int32(start), consts)
            if pending is not None:   # read the previous chunk while this one runs: no stall on the host
                bar.set_postfix(lpips=f"{float(pending[-1]):.4f}", refresh=False)
                bar.update(pc.chunk_len)
            n = min(pc.chunk_len, pc.steps - start)                     # the last chunk's live steps
            pending = d[:n]
            dists.append(d[:n])
            losses.append(l[:n])
        bar.set_postfix(lpips=f"{float(pending[-1]):.4f}", refresh=False)
        bar.update(len(pending))
    img, d_final = evaluate(var["w"], var["noise"])
    ws = np.asarray(jnp.broadcast_to(var["w"], (1, cfg.num_ws, cfg.w_dim)), np.float32)
    return Projection(ws=ws, w=np.asarray(var["w"]), noise=jax.tree.map(np.asarray, var["noise"]),
                      image=images.to_uint8(img[0]), target=target,
                      dists=np.concatenate([np.asarray(d) for d in dists]),
                      losses=np.concatenate([np.asarray(v) for v in losses]),
                      lpips_start=float(d_start), lpips_final=float(d_final), w_plus=pc.w_plus)


# ----------------------------------------------------------------------------------------------------------------
# Latent files


def save_latent(path: str | Path, proj: Projection) -> Path:
    """Write an .npz atomically: `w` [1,num_ws,w_dim] (NV's projected_w.npz layout), the raw variable, the
    LPIPS curve, and the optimised noise maps under 'noise/<block>/<layer>' keys."""
    arrays = {"w": proj.ws, "w_var": proj.w, "dists": proj.dists, "losses": proj.losses,
              "lpips_final": np.float32(proj.lpips_final), "w_plus": np.bool_(proj.w_plus)}
    for p, x in jax.tree_util.tree_flatten_with_path(proj.noise)[0]:
        arrays["noise/" + paths.path_str(paths.layer_path(p))] = np.asarray(x)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = Path(path)
    images.atomic_write_bytes(path, buf.getvalue())
    return path


def load_latent(path: str | Path, cfg: StyleGAN2Config) -> np.ndarray:
    """ws [1,num_ws,w_dim] float32 from an .npz with key 'w' ([1,num_ws,w_dim] or [num_ws,w_dim], as NV's)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latent file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = sorted(f.files)
            w = np.asarray(f["w"], np.float32) if "w" in keys else None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz latent file: {type(e).__name__}: {e}") from None
    if w is None:
        raise ValueError(f"{path} has no array 'w' (keys: {keys})")
    want = (1, cfg.num_ws, cfg.w_dim)
    if w.shape == want[1:]:
        w = w[None]
    if w.shape != want:
        raise ValueError(f"{path}: 'w' has shape {list(w.shape)}; this {cfg.resolution} px generator needs "
                         f"{list(want)} (num_ws={cfg.num_ws}, w_dim={cfg.w_dim})")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{path}: 'w' holds non-finite values")
    return w
