"""SPADE (Park et al. 2019, "Semantic Image Synthesis with Spatially-Adaptive Normalization"), resolution-keyed.

References: NVlabs/SPADE `models/networks/{normalization,architecture,generator,encoder,discriminator}.py`, and
imoken1122/SPADE-AnimeFace (an RGB "rough" as the condition, G from z in the 'more' layout, optional per-block
noise, a single PatchGAN). NHWC / HWIO; PyTorch's layouts are kept where they decide numbers (the z -> map
reshape and the encoder's flatten are in NCHW order, spectral norm works on the (O, I*k*k) matrix), so a torch
state dict maps 1:1.

The naming rule (nets/paths.py): generator blocks are `b{R}` by output resolution; the reference's blocks are
layers inside them, named by role (`head`, `mid0`, `mid1`, `up0`..`up4`), so 'normal' has b16/{mid0, mid1}.
Discriminator and encoder layers are `b{R}` by (nominal) input resolution. Param tree:

  G params:      b{R}/{role}/{norm0, norm1[, norm_s]}/{shared, gamma, beta}/{kernel, bias},
                 b{R}/{role}/{conv0, conv1[, conv_s]}/{kernel[, bias]} [+ noise_strength],
                 b{s0}/{in_fc | in_conv} (the first block), b{R}/to_rgb (the last block)
  G batch_stats: b{R}/{role}/{norm0, norm1[, norm_s]}/{mean, var}   (parameter-free batch norm)
  G spectral:    b{R}/{role}/{conv0, conv1[, conv_s]}/{u, v}          (torch spectral_norm's weight_u / weight_v)
  G previews:    cond uint8 [N,R,R,C]   (model files only: the conditions `sample` paints; see `sample`)
  D: b{R}/{kernel, bias} (+ spectral u, v), out; 'multiscale': d{i}/... per scale.  E: b{R}, fc_mu, fc_var.

Initialisation is NVlabs' `init_weights('xavier', 0.02)`: xavier-normal with gain 0.02, zero biases, for every
conv and linear layer.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nets import configs, images, paths
from nets.layers import conv2d, init_jit, to_float

Array = jax.Array
PyTree = Any

LAYOUTS = {"normal": 5, "more": 6, "most": 7}        # NVlabs generator.py: num_up per layout
NORMS = ("batch", "instance")
INPUTS = ("z", "cond")
DISCS = ("patch", "multiscale")
BN_MOMENTUM = 0.1                                    # torch convention: running = (1 - m) running + m batch
EPS = 1e-5                                           # torch BatchNorm2d / InstanceNorm2d epsilon
XAVIER_GAIN = 0.02                                   # NVlabs --init_variance
PREVIEWS = paths.PREVIEWS                            # model-file collection of G: the conditions `sample` paints


@dataclasses.dataclass(frozen=True)
class SPADEConfig:
    """G, D and encoder hyperparameters (NVlabs option names in comments). Hashable: a static jit argument."""
    resolution: int = 256             # --crop_size (square images)
    layout: str = "more"              # --num_upsampling_layers: normal | more | most
    ngf: int = 64                     # --ngf; widths 16ngf (head, middle) .. ngf (up3), ngf/2 (up4)
    ndf: int = 64                     # --ndf
    cond_channels: int = 3            # label_nc (+ dontcare + instance); 3 for an RGB rough
    img_channels: int = 3
    input: str = "z"                  # 'z': Linear(z) -> 16ngf x s0 x s0 (AnimeFace, --use_vae); 'cond': conv3x3
                                      # on the condition nearest-downsampled to s0 x s0 (NVlabs without VAE)
    z_dim: int = 256
    vae: bool = False                 # --use_vae: a ConvEncoder gives z from a style image (needs input 'z')
    norm: str = "batch"               # SPADE's parameter-free norm: batch (synchronised in training) | instance
    hidden: int = 128                 # SPADE's shared conv width ("nhidden = 128")
    spade_kernel: int = 3
    spectral: bool = True             # spectral norm on the residual blocks' convs (and D / E, as the reference)
    noise: bool = False               # AnimeFace --noise: a learned scalar times N(0,1) after each block's conv1
    disc: str = "patch"               # 'patch': AnimeFace's single PatchGAN on (image, cond), k4 pad 1;
                                      # 'multiscale': NVlabs' num_d NLayerDiscriminators on (cond, image), k4 pad 2
    d_layers: int = 5                 # hidden conv layers of a (sub-)discriminator (AnimeFace 5, --n_layers_D 4)
    num_d: int = 2                    # --num_D ('multiscale' only)
    enc_size: int = 256               # the encoder's input size (NVlabs resizes to 256 bilinearly)
    rough_size: int = 256             # working size of the rough maker the training data used (datasets/sketch.py)
    conv_impl: str = "auto"           # 'auto' (per pass fastest on CPU, see layers.conv2d), 'xla', 'winograd'
    # Fields two blend parents may differ in: execution choices and D-only settings.
    BLEND_FREE_FIELDS: ClassVar[frozenset[str]] = frozenset({"conv_impl", "disc", "d_layers", "num_d", "ndf"})

    def __post_init__(self):
        for field, value, allowed in (("layout", self.layout, tuple(LAYOUTS)), ("norm", self.norm, NORMS),
                                      ("input", self.input, INPUTS), ("disc", self.disc, DISCS)):
            if value not in allowed:
                raise ValueError(f"SPADE {field} must be one of {list(allowed)}; got {value!r}")
        if self.resolution % (2 ** LAYOUTS[self.layout]):
            raise ValueError(f"SPADE resolution {self.resolution} is not a multiple of 2^{LAYOUTS[self.layout]} "
                             f"(layout {self.layout!r} upsamples {LAYOUTS[self.layout]} times)")
        if self.vae and self.input != "z":
            raise ValueError("SPADE vae=True needs input='z' (the encoder's z feeds the generator's in_fc)")
        if self.ngf < 2 or self.ndf < 1 or self.d_layers < 2 or self.num_d < 1:
            raise ValueError(f"SPADE widths and depths too small: ngf {self.ngf}, ndf {self.ndf}, d_layers "
                             f"{self.d_layers}, num_d {self.num_d}")
        if self.vae and (self.enc_size < 8 or self.enc_size & (self.enc_size - 1)):
            raise ValueError(f"SPADE enc_size must be a power of two >= 8; got {self.enc_size}")

    @property
    def start(self) -> int:
        """s0: the side of the first feature map (crop / 2^num_up)."""
        return self.resolution // 2 ** LAYOUTS[self.layout]

    def blocks(self) -> tuple[tuple[int, tuple[tuple[str, int, bool], ...]], ...]:
        """The generator plan: ((R, ((role, out channels, upsample before), ...)), ...) in order."""
        s, top = self.start, 16 * self.ngf
        plan = [(s, (("head", top, False),))]
        if self.layout == "normal":
            plan.append((2 * s, (("mid0", top, True), ("mid1", top, False))))
        else:
            plan += [(2 * s, (("mid0", top, True),)), (4 * s, (("mid1", top, True),))]
        widths = [8, 4, 2, 1] + ([0.5] if self.layout == "most" else [])
        r = plan[-1][0]
        for i, w in enumerate(widths):
            r *= 2
            plan.append((r, ((f"up{i}", int(w * self.ngf), True),)))
        return tuple(plan)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(r for r, _ in self.blocks())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SPADEConfig":
        return configs.from_dict(cls, d)


PRESETS: dict[str, dict] = {
    "spade-anime": dict(),                                                   # AnimeFace: 256 px, 'more', from z
    "spade-nv": dict(layout="normal", input="cond", norm="batch", disc="multiscale", d_layers=4, num_d=2),
    "spade-nv-vae": dict(layout="normal", input="z", vae=True, disc="multiscale", d_layers=4, num_d=2),
    "tiny": dict(resolution=32, layout="normal", ngf=4, ndf=8, z_dim=16, hidden=16, d_layers=3, enc_size=32),
}


def preset(name: str, **overrides) -> SPADEConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown SPADE preset {name!r}; choose from {sorted(PRESETS)}")
    return SPADEConfig(**{**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------------------------------------------
# Functions


def lrelu(x: Array) -> Array:
    return jnp.where(x >= 0, x, 0.2 * x)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """PyTorch's legacy 'nearest' source indices: min(floor(dst * (in / out)), in - 1), in float32 as ATen."""
    scale = np.float32(n_in / n_out)
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale), n_in - 1).astype(np.int32)


def resize_nearest(x: Array, size: Sequence[int]) -> Array:
    """x [N,H,W,C] -> [N,h,w,C] with torch F.interpolate(mode='nearest') (not jax.image's half-pixel rule)."""
    h, w = size
    if (h, w) == x.shape[1:3]:
        return x
    return x[:, nearest_indices(x.shape[1], h)][:, :, nearest_indices(x.shape[2], w)]


def upsample2x(x: Array) -> Array:
    """nn.Upsample(scale_factor=2) (nearest): every pixel repeated 2x2. [N,H,W,C] -> [N,2H,2W,C]."""
    n, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)


def instance_norm(x: Array, eps: float = EPS) -> Array:
    """InstanceNorm2d(affine=False): per sample and channel over H, W, biased variance. [N,H,W,C]."""
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
    return (x - mean) * lax.rsqrt(var + eps)


def avg_pool_3s2(x: Array) -> Array:
    """avg_pool2d(kernel 3, stride 2, padding 1, count_include_pad=False): the multiscale D's downsampling."""
    win, strides, pad = (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    total = lax.reduce_window(x, 0.0, lax.add, win, strides, pad)
    count = lax.reduce_window(jnp.ones_like(x[:1, :, :, :1]), 0.0, lax.add, win, strides, pad)
    return total / count


def _normalize(v: Array, eps: float = 1e-12) -> Array:
    """F.normalize(v, dim=0, eps): v / max(|v|, eps)."""
    return v / jnp.maximum(jnp.linalg.norm(v), eps)


def xavier(gain: float = XAVIER_GAIN) -> nn.initializers.Initializer:
    """xavier_normal_(gain): N(0, gain^2 * 2 / (fan_in + fan_out)), fans with the receptive field (HWIO, [in,out])."""
    return nn.initializers.variance_scaling(gain ** 2, "fan_avg", "normal")


# ----------------------------------------------------------------------------------------------------------------
# Layers


class Conv(nn.Module):
    """Conv2d with torch's zero padding (default k // 2), xavier init, optional spectral norm. kernel [k,k,I,O].

    Spectral norm is torch.nn.utils.spectral_norm with one power iteration: u [O], v [I*k*k] in the 'spectral'
    collection, updated (without gradient) on every call with update_stats=True; W / (u . W v) with W the
    (O, I*k*k) matrix of the kernel in torch order."""
    features: int
    kernel: int = 3
    stride: int = 1
    padding: int | None = None
    use_bias: bool = True
    spectral: bool = False
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: Array, update_stats: bool = False) -> Array:
        k, cin = self.kernel, x.shape[-1]
        w = self.param("kernel", xavier(), (k, k, cin, self.features))
        if self.spectral:
            w = self._spectral(w, update_stats)
        pad = k // 2 if self.padding is None else self.padding
        if self.stride == 1 and pad == k // 2 and k % 2:
            y = conv2d(x, w.astype(x.dtype), impl=self.conv_impl)                           # 'same': the fast paths
        else:
            y = lax.conv_general_dilated(x, w.astype(x.dtype), (self.stride,) * 2, [(pad, pad)] * 2,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(y.dtype).reshape(1, 1, 1, -1)
        return y

    def _spectral(self, w: Array, update: bool) -> Array:
        mat = jnp.transpose(w, (3, 2, 0, 1)).reshape(w.shape[-1], -1)                        # [O, I*k*k]
        u = self.variable("spectral", "u", lambda: _normalize(
            jax.random.normal(self.make_rng("params"), (mat.shape[0],))))
        v = self.variable("spectral", "v", lambda: _normalize(
            jax.random.normal(self.make_rng("params"), (mat.shape[1],))))
        if update and not self.is_initializing():
            m = lax.stop_gradient(mat)
            v.value = _normalize(m.T @ u.value)
            u.value = _normalize(m @ v.value)
        sigma = lax.stop_gradient(u.value) @ (mat @ lax.stop_gradient(v.value))
        return w / sigma


class ConvWeights(nn.Module):
    """The parameters of a Conv without the conv (kernel [k,k,I,O] xavier, bias [O] zeros; Conv's names), for a
    caller that runs several convs of one input as one."""
    features: int
    kernel: int = 3

    @nn.compact
    def __call__(self, in_features: int) -> tuple[Array, Array]:
        k = self.kernel
        return (self.param("kernel", xavier(), (k, k, in_features, self.features)),
                self.param("bias", nn.initializers.zeros, (self.features,)))


class Linear(nn.Module):
    """nn.Linear with xavier init: kernel [in, out], bias [out]."""
    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", xavier(), (x.shape[-1], self.features))
        return x @ kernel + self.param("bias", nn.initializers.zeros, (self.features,)).reshape(1, -1)


class SPADE(nn.Module):
    """norm(x) * (1 + gamma(c)) + beta(c), c = the condition nearest-resized to x (NVlabs normalization.py).

    The norm is parameter-free: 'instance', or 'batch' with running mean / var in 'batch_stats' (torch momentum
    0.1, unbiased running variance). In training (train=True) batch statistics are used and, under pmap,
    synchronised over `axis_name` (SyncBatchNorm); at inference the running statistics."""
    norm: str = "batch"
    hidden: int = 128
    kernel: int = 3
    axis_name: str | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: Array, cond: Array, train: bool = False) -> Array:
        xn = instance_norm(x) if self.norm == "instance" else self._batch_norm(x, train)
        c = resize_nearest(cond, x.shape[1:3])
        a = nn.relu(Conv(self.hidden, self.kernel, conv_impl=self.conv_impl, name="shared")(c))
        ch = x.shape[-1]
        wg, bg = ConvWeights(ch, self.kernel, name="gamma")(self.hidden)
        wb, bb = ConvWeights(ch, self.kernel, name="beta")(self.hidden)
        # gamma and beta read the same activations: one conv with both kernels, twice as wide (one pass over the
        # activations, and on CPU a wide conv takes conv3x3's Winograd forms in training), then split.
        gb = conv2d(a, jnp.concatenate([wg, wb], axis=-1).astype(a.dtype), impl=self.conv_impl)
        gb = gb + jnp.concatenate([bg, bb]).astype(gb.dtype).reshape(1, 1, 1, -1)          # [N,H,W,2C]
        return xn * (1 + gb[..., :ch]) + gb[..., ch:]

    def _batch_norm(self, x: Array, train: bool) -> Array:
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        if not train:
            return (x - ra_mean.value.reshape(1, 1, 1, c)) * lax.rsqrt(ra_var.value.reshape(1, 1, 1, c) + EPS)
        sync = (lambda t: lax.pmean(t, self.axis_name)) if self.axis_name else (lambda t: t)
        mean = sync(jnp.mean(x, axis=(0, 1, 2)))                                               # [C], two-pass
        var = sync(jnp.mean(jnp.square(x - mean.reshape(1, 1, 1, c)), axis=(0, 1, 2)))
        if not self.is_initializing():
            n = x.size // c * (lax.axis_size(self.axis_name) if self.axis_name else 1)
            ra_mean.value = (1 - BN_MOMENTUM) * ra_mean.value + BN_MOMENTUM * mean
            ra_var.value = (1 - BN_MOMENTUM) * ra_var.value + BN_MOMENTUM * var * (n / max(n - 1, 1))
        return (x - mean.reshape(1, 1, 1, c)) * lax.rsqrt(var.reshape(1, 1, 1, c) + EPS)


class SPADEResBlock(nn.Module):
    """SPADEResnetBlock(fin, fout): pre-activation SPADE -> lrelu 0.2 -> conv, twice, plus a shortcut (a SPADE and
    a 1x1 conv without bias iff fin != fout). AnimeFace's noise: + noise_strength * n after conv1."""
    features: int
    cfg: SPADEConfig
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: Array, cond: Array, train: bool = False, noise: Array | None = None) -> Array:
        cfg, fin = self.cfg, x.shape[-1]
        fmid = min(fin, self.features)
        spade = functools.partial(SPADE, cfg.norm, cfg.hidden, cfg.spade_kernel, self.axis_name, cfg.conv_impl)
        conv = functools.partial(Conv, spectral=cfg.spectral, conv_impl=cfg.conv_impl)
        shortcut = x
        if fin != self.features:
            shortcut = conv(self.features, 1, use_bias=False, name="conv_s")(
                spade(name="norm_s")(x, cond, train), train)
        dx = conv(fmid, 3, name="conv0")(lrelu(spade(name="norm0")(x, cond, train)), train)
        dx = conv(self.features, 3, name="conv1")(lrelu(spade(name="norm1")(dx, cond, train)), train)
        if cfg.noise:
            strength = self.param(paths.NOISE_STRENGTH, nn.initializers.zeros, ())
            if noise is not None:
                dx = dx + strength * noise
        return shortcut + dx


class GenBlock(nn.Module):
    """One resolution of the generator: its residual blocks (by role), each after a nearest x2 if planned. The
    first block also holds the input layer (in_fc from z, or in_conv on the condition downsampled to s0), the last
    the output conv (to_rgb): both work at their block's resolution, so blends move them with it (as StyleGAN2's
    torgb)."""
    layers: tuple[tuple[str, int, bool], ...]
    cfg: SPADEConfig
    axis_name: str | None = None
    first: bool = False
    last: bool = False

    @nn.compact
    def __call__(self, x: Array | None, cond: Array, z: Array | None, train: bool,
                 noise_keys: Array | None) -> Array:
        cfg = self.cfg
        if self.first:
            x = self._input(cond, z)
        for j, (role, fout, up) in enumerate(self.layers):
            x = upsample2x(x) if up else x
            noise = None
            if cfg.noise and noise_keys is not None:
                h, w = x.shape[1:3]
                tag = x.shape[1] * 8 + j                                   # one stream per (resolution, layer)
                noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, tag), (h, w, 1)))(noise_keys)
            x = SPADEResBlock(fout, cfg, self.axis_name, name=role)(x, cond, train, noise)
        if self.last:
            x = jnp.tanh(Conv(cfg.img_channels, 3, conv_impl=cfg.conv_impl, name="to_rgb")(lrelu(x)))
        return x

    def _input(self, cond: Array, z: Array | None) -> Array:
        cfg, n, s = self.cfg, cond.shape[0], self.cfg.start
        top = 16 * cfg.ngf
        if cfg.input == "cond":
            return Conv(top, 3, conv_impl=cfg.conv_impl, name="in_conv")(resize_nearest(cond, (s, s)))
        if z is None:
            raise ValueError("this SPADE generator starts from z: pass z [N, z_dim]")
        return Linear(top * s * s, name="in_fc")(z).reshape(n, top, s, s).transpose(0, 2, 3, 1)  # torch view order


class Generator(nn.Module):
    """SPADEGenerator: cond [N,R,R,cond_channels] in [-1, 1] (+ z [N,z_dim] for input 'z') -> [N,R,R,C] in (-1, 1).

    noise_keys: one PRNG key per sample for the noise inputs (cfg.noise); None = no noise."""
    cfg: SPADEConfig
    axis_name: str | None = None

    @nn.compact
    def __call__(self, cond: Array, z: Array | None = None, noise_keys: Array | None = None,
                 train: bool = False) -> Array:
        plan = self.cfg.blocks()
        x = None
        for i, (res, layers) in enumerate(plan):
            x = GenBlock(layers, self.cfg, self.axis_name, first=i == 0, last=i == len(plan) - 1,
                         name=f"b{res}")(x, cond, z, train, noise_keys)
        return x


class Encoder(nn.Module):
    """ConvEncoder (VAE): image [N,H,W,C] in [-1, 1] -> (mu, logvar) [N,z_dim]. Stride-2 3x3 convs with spectral
    norm and instance norm (no bias), lrelu between; the input is resized bilinearly to enc_size first."""
    cfg: SPADEConfig

    @nn.compact
    def __call__(self, image: Array, train: bool = False) -> tuple[Array, Array]:
        cfg, r = self.cfg, self.cfg.enc_size
        x = image
        if x.shape[1:3] != (r, r):
            x = jax.image.resize(x, (x.shape[0], r, r, x.shape[3]), "bilinear", antialias=False)
        for i in range(int(math.log2(r)) - 2):                                             # down to 4 x 4
            x = lrelu(x) if i else x
            width = cfg.ngf * min(2 ** i, 8)
            x = instance_norm(Conv(width, 3, 2, 1, use_bias=False, spectral=True, name=f"b{r >> i}")(x, train))
        x = lrelu(x).transpose(0, 3, 1, 2).reshape(x.shape[0], -1)                          # torch view order
        return Linear(cfg.z_dim, name="fc_mu")(x), Linear(cfg.z_dim, name="fc_var")(x)


class PatchDiscriminator(nn.Module):
    """One PatchGAN; returns every layer's output [feat_0, ..., logits] (feature matching uses all but the last).

    'patch' (AnimeFace `Discriminator`): input concat(image, cond), padding 1, spectral norm on the hidden layers
    after the first, no norm. 'multiscale' member (NVlabs NLayerDiscriminator): input concat(cond, image), padding
    2, spectral + instance norm (no bias) on those layers. Widths min(ndf * 2^i, 512) (both references cap at 512
    channels, not at 8 ndf); every hidden layer has
    stride 2 except the last, which has stride 1, as does the output conv."""
    cfg: SPADEConfig
    resolution: int

    @nn.compact
    def __call__(self, image: Array, cond: Array, train: bool = False) -> list[Array]:
        cfg, nv = self.cfg, self.cfg.disc == "multiscale"
        x = jnp.concatenate([cond, image] if nv else [image, cond], axis=-1)
        pad, r, outs = (2 if nv else 1), self.resolution, []
        for i in range(cfg.d_layers):
            stride = 1 if i == cfg.d_layers - 1 else 2
            normed = i > 0
            x = Conv(min(cfg.ndf * 2 ** i, 512), 4, stride, pad, use_bias=not (nv and normed),
                     spectral=normed and cfg.spectral, name=f"b{r}")(x, train)
            x = lrelu(instance_norm(x) if nv and normed else x)
            outs.append(x)
            r //= stride
        outs.append(Conv(1, 4, 1, pad, name="out")(x))
        return outs


class Discriminator(nn.Module):
    """cfg.disc 'patch': [outputs of one PatchGAN]; 'multiscale': one list per scale, the input average-pooled
    (3, stride 2) between scales. Fake and real go through in one call (concatenated on the batch axis)."""
    cfg: SPADEConfig

    @nn.compact
    def __call__(self, image: Array, cond: Array, train: bool = False) -> list[list[Array]]:
        cfg = self.cfg
        if cfg.disc == "patch":
            return [PatchDiscriminator(cfg, cfg.resolution, name="d0")(image, cond, train)]
        outs = []
        for i in range(cfg.num_d):
            outs.append(PatchDiscriminator(cfg, cfg.resolution >> i, name=f"d{i}")(image, cond, train))
            image, cond = avg_pool_3s2(image), avg_pool_3s2(cond)
        return outs


# ----------------------------------------------------------------------------------------------------------------
# Init, rendering


@functools.lru_cache(maxsize=16)
def _init_fns(cfg: SPADEConfig):
    """One jitted init per config (cached), compiled without backend optimisation. numpy dummies: jnp ones made
    while the first call is traced (e.g. under jax.eval_shape) would be tracers cached in the closures."""
    r = cfg.resolution
    cond = np.zeros((1, r, r, cfg.cond_channels), np.float32)
    img = np.zeros((1, r, r, cfg.img_channels), np.float32)
    z = np.zeros((1, cfg.z_dim), np.float32) if cfg.input == "z" else None
    jit = init_jit
    g = jit(lambda k: Generator(cfg).init({"params": k}, cond, z))
    d = jit(lambda k: Discriminator(cfg).init({"params": k}, img, cond))
    e = jit(lambda k: Encoder(cfg).init({"params": k}, img)) if cfg.vae else None
    return g, d, e


def init_generator(cfg: SPADEConfig, key: Array) -> dict:
    """{'params', 'batch_stats' (norm 'batch'), 'spectral' (spectral=True)} of a fresh generator."""
    return _init_fns(cfg)[0](key)


def init_discriminator(cfg: SPADEConfig, key: Array) -> dict:
    return _init_fns(cfg)[1](key)


def init_encoder(cfg: SPADEConfig, key: Array) -> dict:
    if not cfg.vae:
        raise ValueError("this SPADE config has no encoder (vae=False)")
    return _init_fns(cfg)[2](key)


def init_model(cfg: SPADEConfig, key: Array) -> dict:
    """Model-file variables of fresh networks: {"G", "D"} (+ "E" with the VAE)."""
    kg, kd, ke = jax.random.split(key, 3)
    out = {"G": init_generator(cfg, kg), "D": init_discriminator(cfg, kd)}
    if cfg.vae:
        out["E"] = init_encoder(cfg, ke)
    return out


def network_vars(g_vars: dict) -> dict:
    """G's variables without the model file's previews (what Generator.apply takes)."""
    return {k: v for k, v in g_vars.items() if k != PREVIEWS}


@functools.lru_cache(maxsize=32)
def render_fn(cfg: SPADEConfig):
    """jit((g_vars, cond [N,R,R,Cc] float, z [N,z_dim] | None, noise_keys [N] | None) -> images [N,R,R,C] float),
    inference mode (running statistics, no power iteration); one program per config and input kinds."""
    def run(g_vars, cond, z, noise_keys):
        return Generator(cfg).apply(network_vars(g_vars), cond, z, noise_keys, train=False)
    return jax.jit(run)


def encode_fn(cfg: SPADEConfig):
    """jit((e_vars, image [N,H,W,C] float) -> (mu, logvar))."""
    return _encode_jit(cfg)


@functools.lru_cache(maxsize=8)
def _encode_jit(cfg: SPADEConfig):
    return jax.jit(lambda e_vars, image: Encoder(cfg).apply(e_vars, image, train=False))


def seed_inputs(cfg: SPADEConfig, seeds: Sequence[int], psi: float = 1.0, noise: bool = True
                ) -> tuple[np.ndarray | None, Array | None]:
    """(z [N,z_dim] * psi or None, noise keys [N] or None) for seeds: z as nets.sampling (numpy RandomState,
    independent of batch composition), noise keys key(seed)."""
    z = None
    if cfg.input == "z":
        z = np.stack([np.random.RandomState(s).randn(cfg.z_dim) for s in seeds]).astype(np.float32) * psi
    keys = jax.vmap(jax.random.key)(jnp.asarray(list(seeds), jnp.uint32)) if cfg.noise and noise else None
    return z, keys


def paint(cfg: SPADEConfig, g_vars: dict, cond: np.ndarray, seeds: Sequence[int], *, psi: float = 1.0,
          noise_mode: str = "const", z: np.ndarray | None = None) -> np.ndarray:
    """Condition i painted with seed i: cond uint8 (or [-1, 1] float) [N,R,R,Cc], len(seeds) == N -> uint8
    [N,R,R,C]. `z` (e.g. a VAE encoding of a style image) replaces the seeds' prior samples."""
    cond = to_float(cond)
    if cond.shape[1:] != (cfg.resolution, cfg.resolution, cfg.cond_channels):
        raise ValueError(f"condition of shape {tuple(cond.shape[1:])}; this SPADE model paints "
                         f"{cfg.resolution}x{cfg.resolution}x{cfg.cond_channels} conditions")
    if len(seeds) != cond.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {cond.shape[0]} conditions")
    z_seed, keys = seed_inputs(cfg, seeds, psi, noise=noise_mode != "none")
    z = z_seed if z is None else np.asarray(z, np.float32)
    out = render_fn(cfg)(g_vars, cond, None if z is None else jnp.asarray(z), keys)
    return images.to_uint8(np.asarray(out))


def sample(cfg: SPADEConfig, g_vars: dict, seeds: Sequence[int], *, psi: float = 1.0,
           noise_mode: str = "const") -> np.ndarray:
    """The registry renderer: seed s paints preview condition s % N of the model file (G's 'previews': a few
    training conditions a SPADE export stores, so that seed-only tools, `gafu sample` and the blend figure, have
    something to paint). psi scales z (truncation towards the prior's mean). -> uint8 [len(seeds),R,R,C]."""
    if PREVIEWS not in g_vars:
        raise ValueError("this SPADE generator carries no preview conditions (G/previews/cond); paint it with "
                         "`gafu spade paint ROUGH --model M` instead")
    bank = np.asarray(g_vars[PREVIEWS]["cond"])
    cond = bank[[s % len(bank) for s in seeds]]
    return paint(cfg, g_vars, cond, list(seeds), psi=psi, noise_mode=noise_mode)


def param_count(tree: PyTree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
