"""StyleGAN2 generator and residual discriminator (Karras et al. 2020, config-f), resolution-keyed.

Reference: NVlabs/stylegan2-ada-pytorch `training/networks.py` (architecture 'skip' G, 'resnet' D).
Every spatial block is a submodule named `b{R}` (R = its output resolution for G, input resolution for D), so
swapping and interpolation are tree_maps keyed on resolution (see interp/). Param tree (README.md, "The param tree"):

  params:  mapping/fc{i}/{kernel,bias}
           synthesis/b4/{const, conv1, torgb}, synthesis/b{R}/{conv0, conv1, torgb}
             conv*: {weight [3,3,I,O], bias, noise_strength, affine/{kernel,bias}}; torgb: {weight, bias, affine}
  buffers: mapping/w_avg [w_dim]; synthesis/b{R}/conv*/noise_const [R,R]
  D params: b{R}/{fromrgb (top block only), conv0, conv1, skip}, b4/{conv, fc, out}
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nets import configs, paths
from nets.layers import Conv2d, Dense, NoiseMode, SynthesisLayer, ToRGB, d_res_body, minibatch_std, \
    normalize_2nd_moment, upsample2d

Array = jax.Array
PyTree = Any


@dataclasses.dataclass(frozen=True)
class StyleGAN2Config:
    """Hyperparameters shared by G and D (NV naming). Hashable, so it can be a static jit argument."""
    resolution: int = 256             # output resolution, a power of two in 4..1024
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8           # 8 for config-f/paper256; 2 for NV's ADA 'auto' config
    mapping_lr_mul: float = 0.01
    w_avg_beta: float = 0.995
    channel_base: int = 32768         # ch(res) = min(channel_base // res, channel_max)
    channel_max: int = 512
    img_channels: int = 3
    fused_modconv: bool = False       # grouped-conv modulated conv: parity tests / accelerators only
    conv_impl: str = "auto"           # 'auto' (per pass fastest on CPU, see layers.conv2d), 'xla', 'winograd'
    conv_clamp: float | None = None   # 256 for models trained with stylegan2-ada-pytorch
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1
    # Fields two blend parents may differ in: execution choices, and settings of training or of D only.
    BLEND_FREE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"fused_modconv", "conv_impl", "w_avg_beta", "mbstd_group_size", "mbstd_num_channels"})

    def __post_init__(self):
        r = self.resolution
        if r < 4 or r > 1024 or r & (r - 1):
            raise ValueError(f"resolution must be a power of two in 4..1024; got {r}")
        if self.mapping_layers < 1:
            raise ValueError(f"mapping_layers must be >= 1; got {self.mapping_layers}")

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Block resolutions 4, 8, ..., R."""
        return tuple(2 ** k for k in range(2, int(math.log2(self.resolution)) + 1))

    @property
    def num_ws(self) -> int:
        return 2 * int(math.log2(self.resolution)) - 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StyleGAN2Config":
        """From a plain dict (a model file's config): every value type-checked, unknown keys refused."""
        return configs.from_dict(cls, d)


PRESETS: dict[str, dict] = {
    "config-f": dict(channel_base=32768, channel_max=512, mapping_layers=8),
    "paper256": dict(resolution=256, channel_base=16384, channel_max=512, mapping_layers=8,
                     mbstd_group_size=8),
    "tiny": dict(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=32),
}


def preset(name: str, **overrides) -> StyleGAN2Config:
    """A named configuration ('config-f', 'paper256', 'tiny') with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown StyleGAN2 preset {name!r}; choose from {sorted(PRESETS)}")
    return StyleGAN2Config(**{**PRESETS[name], **overrides})


def ws_index(res: int) -> tuple[int, ...]:
    """Indices into ws [N,num_ws,w_dim] used by block b{res}: (conv1, torgb) for b4, else (conv0, conv1, torgb)."""
    if res == 4:
        return (0, 1)
    k = int(math.log2(res))
    return (2 * k - 5, 2 * k - 4, 2 * k - 3)


def truncate(ws: Array, w_avg: Array, psi: float | Array, cutoff: int | None = None) -> Array:
    """w_avg + psi * (ws - w_avg) on ws[:, :cutoff] (all when cutoff is None). ws [N,num_ws,w_dim]."""
    t = w_avg[None, None, :] + psi * (ws - w_avg[None, None, :])
    if cutoff is None:
        return t
    mask = (jnp.arange(ws.shape[1]) < cutoff)[None, :, None]
    return jnp.where(mask, t, ws)


def style_mix(ws: Array, ws2: Array, cutoff: int | Array) -> Array:
    """ws[:, :cutoff] from ws, ws[:, cutoff:] from ws2 (cutoff may be traced). [N,num_ws,w_dim]."""
    mask = (jnp.arange(ws.shape[1]) < cutoff)[None, :, None]
    return jnp.where(mask, ws, ws2)


class MappingNetwork(nn.Module):
    """z -> PixelNorm -> L x (Dense lr_mul 0.01, lrelu) -> w, broadcast to [N,num_ws,w_dim]; tracks w_avg."""
    cfg: StyleGAN2Config

    @nn.compact
    def __call__(self, z: Array, psi: float | Array = 1.0, cutoff: int | None = None,
                 update_w_avg: bool = False) -> Array:
        c = self.cfg
        x = normalize_2nd_moment(z.astype(jnp.float32))
        for i in range(c.mapping_layers):
            x = Dense(c.w_dim, lr_mul=c.mapping_lr_mul, act="lrelu", name=f"fc{i}")(x)
        w_avg = self.variable("buffers", "w_avg", jnp.zeros, (c.w_dim,), jnp.float32)
        if update_w_avg and not self.is_initializing():
            batch_mean = jnp.mean(x, axis=0)
            w_avg.value = batch_mean + c.w_avg_beta * (w_avg.value - batch_mean)
        ws = jnp.broadcast_to(x[:, None, :], (x.shape[0], c.num_ws, c.w_dim))
        if isinstance(psi, (int, float)) and psi == 1:
            return ws
        return truncate(ws, w_avg.value, psi, cutoff)


class SynthesisBlock(nn.Module):
    """Block b{res}: (const | conv0 up) -> conv1 -> torgb; the image is the running sum of upsampled ToRGBs."""
    cfg: StyleGAN2Config
    res: int

    @nn.compact
    def __call__(self, x: Array | None, img: Array | None, ws: Array, noise_mode: NoiseMode):
        c, r = self.cfg, self.res
        ch = c.channels(r)
        kw = dict(fused=c.fused_modconv, clamp=c.conv_clamp)
        ckw = dict(kw, conv_impl=c.conv_impl)
        idx = ws_index(r)
        if r == 4:
            const = self.param("const", nn.initializers.normal(1.0), (4, 4, ch))
            x = jnp.broadcast_to(const[None], (ws.shape[0], 4, 4, ch))
            x = SynthesisLayer(ch, r, name="conv1", **ckw)(x, ws[:, idx[0]], noise_mode)
        else:
            x = SynthesisLayer(ch, r, up=2, name="conv0", **ckw)(x, ws[:, idx[0]], noise_mode)
            x = SynthesisLayer(ch, r, name="conv1", **ckw)(x, ws[:, idx[1]], noise_mode)
        y = ToRGB(c.img_channels, name="torgb", **kw)(x, ws[:, idx[-1]])
        img = y if img is None else upsample2d(img) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N,num_ws,w_dim] -> image [N,R,R,3] in about [-1, 1]."""
    cfg: StyleGAN2Config

    @nn.compact
    def __call__(self, ws: Array, noise_mode: NoiseMode = "random") -> Array:
        c = self.cfg
        if ws.ndim != 3 or ws.shape[1:] != (c.num_ws, c.w_dim):
            raise ValueError(f"ws must be [N, {c.num_ws}, {c.w_dim}] for a {c.resolution} px generator; "
                             f"got {ws.shape}")
        x = img = None
        for r in c.resolutions:
            x, img = SynthesisBlock(c, r, name=f"b{r}")(x, img, ws, noise_mode)
        return img


class Generator(nn.Module):
    """Mapping + synthesis. Call with z; `map`/`synthesize` expose the halves (use apply(..., method=...))."""
    cfg: StyleGAN2Config

    def setup(self):
        self.mapping = MappingNetwork(self.cfg)
        self.synthesis = SynthesisNetwork(self.cfg)

    def __call__(self, z: Array, psi: float | Array = 1.0, cutoff: int | None = None,
                 noise_mode: NoiseMode = "random", z_mix: Array | None = None,
                 mix_cutoff: int | Array | None = None, update_w_avg: bool = False) -> Array:
        ws = self.mapping(z, psi, cutoff, update_w_avg)
        if z_mix is not None:
            if mix_cutoff is None:
                raise ValueError("style mixing needs mix_cutoff (the first ws index taken from z_mix)")
            ws = style_mix(ws, self.mapping(z_mix, psi, cutoff, update_w_avg), mix_cutoff)
        return self.synthesis(ws, noise_mode)

    def map(self, z: Array, psi: float | Array = 1.0, cutoff: int | None = None,
            update_w_avg: bool = False) -> Array:
        return self.mapping(z, psi, cutoff, update_w_avg)

    def synthesize(self, ws: Array, noise_mode: NoiseMode = "random") -> Array:
        return self.synthesis(ws, noise_mode)


class DiscriminatorBlock(nn.Module):
    """Residual block b{res}: [fromrgb] -> conv0 -> conv1 (down) ; skip (1x1 down) ; sum * sqrt(0.5)."""
    cfg: StyleGAN2Config
    res: int
    first: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c, r = self.cfg, self.res
        tmp, out = c.channels(r), c.channels(r // 2)
        kw = dict(clamp=c.conv_clamp, conv_impl=c.conv_impl)
        if self.first:
            x = Conv2d(tmp, kernel=1, act="lrelu", name="fromrgb", **kw)(x)
        return d_res_body(x, tmp, out, **kw)


class DiscriminatorEpilogue(nn.Module):
    """b4: minibatch stddev -> conv 3x3 -> flatten (NCHW order, as NV) -> fc -> out (1 logit)."""
    cfg: StyleGAN2Config

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.cfg
        ch = c.channels(4)
        x = minibatch_std(x, c.mbstd_group_size, c.mbstd_num_channels)
        x = Conv2d(ch, kernel=3, act="lrelu", clamp=c.conv_clamp, conv_impl=c.conv_impl, name="conv")(x)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)                              # [N, C*4*4]
        x = Dense(ch, act="lrelu", name="fc")(x)
        return Dense(1, name="out")(x)[:, 0]                                              # [N]


class Discriminator(nn.Module):
    """Residual D: image [N,R,R,3] -> logits [N]."""
    cfg: StyleGAN2Config

    @nn.compact
    def __call__(self, img: Array) -> Array:
        c = self.cfg
        if img.ndim != 4 or img.shape[1:] != (c.resolution, c.resolution, c.img_channels):
            raise ValueError(f"D expects images [N, {c.resolution}, {c.resolution}, {c.img_channels}]; "
                             f"got {img.shape}")
        x = img.astype(jnp.float32)
        for r in reversed(c.resolutions[1:]):
            x = DiscriminatorBlock(c, r, first=(r == c.resolution), name=f"b{r}")(x)
        return DiscriminatorEpilogue(c, name="b4")(x)


@functools.lru_cache(maxsize=16)
def _init_fns(cfg: StyleGAN2Config):
    """One jitted init per config (cached), so repeated inits do not re-trace or recompile."""
    z = jnp.zeros((1, cfg.z_dim), jnp.float32)
    img = jnp.zeros((1, cfg.resolution, cfg.resolution, cfg.img_channels), jnp.float32)
    g = jax.jit(lambda k: Generator(cfg).init({"params": k}, z, noise_mode="const"))
    d = jax.jit(lambda k: Discriminator(cfg).init(k, img))
    return g, d


def init_generator(cfg: StyleGAN2Config, key: Array) -> PyTree:
    """Variables {'params', 'buffers'} of a fresh generator (w_avg = 0, noise_const ~ N(0,1))."""
    return _init_fns(cfg)[0](key)


def init_discriminator(cfg: StyleGAN2Config, key: Array) -> PyTree:
    """Variables {'params'} of a fresh discriminator."""
    return _init_fns(cfg)[1](key)


def init_model(cfg: StyleGAN2Config, key: Array) -> dict:
    """Model-file variables of a fresh G and D: {"G": {"params", "buffers"}, "D": {"params"}}."""
    kg, kd = jax.random.split(key)
    return {"G": init_generator(cfg, kg), "D": init_discriminator(cfg, kd)}


def without_noise(g_vars: PyTree) -> PyTree:
    """G variables with every noise_strength param set to 0 (same tree; other leaves shared, not copied)."""
    def zero(path: paths.KeyPath, x: Any) -> Any:
        if paths.leaf_name(path) != paths.NOISE_STRENGTH:
            return x
        return (np if isinstance(x, np.ndarray) else jnp).zeros_like(x)      # numpy in, numpy out
    return {**g_vars, paths.PARAMS: jax.tree_util.tree_map_with_path(zero, g_vars[paths.PARAMS])}


def param_count(tree: PyTree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
