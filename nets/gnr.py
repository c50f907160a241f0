"""GANs N' Roses (Chong & Forsyth 2021, arXiv 2106.06561): one face -> many toon styles, resolution-keyed.

Reference: mchong6/GANsNRoses `model.py`, main branch (the release is Generator(256, num_down=4, latent_dim=8,
n_mlp=5, lr_mlp=0.01, n_res=1)). Built from the shared layers (StyleGAN2's equalized convs, D residual blocks,
modulated convs, ToRGB; nets/layers.py). A generator is an encoder (D-type residual tower) to a spatial content code
and an 8-d style code, a 5-layer mapping (lr_mul 0.01, no PixelNorm) to one w shared by every layer, and a decoder:
StyleGAN2 synthesis without the const input, noise or per-layer ws, from the content map up, plus a styled residual
bottleneck. Spatial blocks are named by resolution: input resolution in the encoder and discriminators, output
resolution in the decoder. Param tree of one generator (content resolution C = R / 2^num_down):

  encoder/b{R}/{fromrgb, conv0, conv1, skip}; encoder/b{r}/{conv0, conv1, skip}, r = R/2 .. 2C   (down blocks)
  encoder/b{C}/{res{i}/{conv0, conv1}, content0, content1, style}   bottleneck, content head, first style conv
  encoder/b{r}/style, r = C/2 .. 8; encoder/b4/{fc, style_out}       style head (flatten in NCHW order, as torch;
                                                                     at C = 4 the head is encoder/b4_out)
  mapping/fc{i}
  decoder/b{C}/{res{i}/{conv0, conv1}, conv1, torgb}; decoder/b{r}/{conv0 (x2 up), conv1, torgb}, r = 2C .. R
Image discriminator: local/b{R..2l} + local/b{l}/out (l x l patch logits), global/b{R..2g} + global/b{g}/{out,
std_conv} + global/b{g/2}/{std_fc, std_out} (the diversity head). Latent discriminator: fc0..fc3, mbstd_fc, out.

Batch statistics (the diversity head's per-feature std, the latent D's minibatch std) are taken inside content
groups with an explicit group axis: the discriminators take [G, g, ...] (G groups of g samples) and a group's
score never depends on the other groups, however many sit on a device.
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

from nets import configs, images, paths
from nets.layers import Conv2d, Dense, SynthesisLayer, ToRGB, d_res_body, group_feature_std, init_jit, to_float, \
    upsample2d
from nets.sampling import z_from_seeds

Array = jax.Array
PyTree = Any
PREVIEWS = paths.PREVIEWS           # G's model-file collection: a few faces for seed-only tools (`gafu sample`)
NETWORKS = ("G", "G_B2A", "D_A", "D_B", "D_L")   # G: A->B (faces -> toons), G_B2A: B->A; D_A faces, D_B toons
# Blends key the decoder on resolution; the encoder and mapping come whole with the low-resolution parent.
BLEND_SCOPE = ("params/decoder",)


def _pow2(x: int) -> bool:
    return x >= 1 and not x & (x - 1)


@dataclasses.dataclass(frozen=True)
class GNRConfig:
    """One config for both generators and the three discriminators (hashable: a static jit argument)."""
    resolution: int = 256
    num_down: int = 4                 # encoder downsamplings: content code at R / 2^num_down (16 x 16 at 256 px)
    latent_dim: int = 8               # style code
    n_mlp: int = 5                    # mapping layers
    n_res: int = 1                    # residual blocks at the content resolution (encoder and decoder)
    style_dim: int = 512              # w
    lr_mlp: float = 0.01
    channel_base: int = 16384         # ch(res) = min(channel_base // res, channel_max): the reference's table
    channel_max: int = 512            # {4..32: 512, 64: 256, 128: 128, 256: 64}
    img_channels: int = 3
    local_res: int = 32               # the image D's patch logits (R / 8 at 256 px)
    global_res: int = 8               # the global tower's end; the diversity head convolves it to global_res / 2
    diversity_features: int = 128     # features whose per-group std the diversity head scores
    latent_d_width: int = 256
    conv_impl: str = "auto"           # 'auto' | 'xla' | 'winograd' (nets.layers.conv2d)
    # Fields two blend parents may differ in: execution choices and discriminator-only settings.
    BLEND_FREE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"conv_impl", "local_res", "global_res", "diversity_features", "latent_d_width"})

    def __post_init__(self):
        r = self.resolution
        if not _pow2(r) or not 8 <= r <= 1024:
            raise ValueError(f"resolution must be a power of two in 8..1024; got {r}")
        if self.num_down < 1 or self.content_res < 4:
            raise ValueError(f"num_down must be >= 1 with a content code of at least 4x4; got num_down "
                             f"{self.num_down} at {r} px")
        for name in ("local_res", "global_res"):
            v = getattr(self, name)
            if not _pow2(v) or not 2 <= v <= r // 2:
                raise ValueError(f"{name} must be a power of two in 2..{r // 2}; got {v}")
        for name in ("latent_dim", "n_mlp", "style_dim", "diversity_features", "latent_d_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.n_res < 0:
            raise ValueError(f"n_res must be >= 0; got {self.n_res}")

    @property
    def content_res(self) -> int:
        return self.resolution >> self.num_down

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GNRConfig":
        return configs.from_dict(cls, d)


PRESETS: dict[str, dict] = {
    "gnr": {},                                                    # the release: 256 px, num_down 4, latent 8
    "tiny": dict(resolution=32, num_down=2, channel_base=1024, channel_max=64, style_dim=64, local_res=8,
                 global_res=4, diversity_features=32, latent_d_width=64),
}


def preset(name: str, **overrides) -> GNRConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown GNR preset {name!r}; choose from {sorted(PRESETS)}")
    return GNRConfig(**{**PRESETS[name], **overrides})


def _flatten_nchw(x: Array) -> Array:
    """[N,H,W,C] -> [N,C*H*W] in torch's order, so imported Linear weights line up."""
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)


class DownBlock(nn.Module):
    """b{res} of an encoder / D tower: [fromrgb 1x1] + residual block res -> res/2."""
    cfg: GNRConfig
    res: int
    first: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c, ch = self.cfg, self.cfg.channels(self.res)
        if self.first:
            x = Conv2d(ch, kernel=1, act="lrelu", name="fromrgb")(x)
        return d_res_body(x, ch, c.channels(self.res // 2), conv_impl=c.conv_impl)


def _down_conv(cfg: GNRConfig, x: Array, res: int, name: str) -> Array:
    """The stride-2 3x3 ConvLayer (lrelu) res -> res/2 of the style head and the diversity head (made in the
    caller's compact scope)."""
    return Conv2d(cfg.channels(res // 2), kernel=3, act="lrelu", down=2, conv_impl=cfg.conv_impl, name=name)(x)


def _tower(cfg: GNRConfig, x: Array, stop: int) -> Array:
    """DownBlocks b{R} .. b{2 stop} (made in the caller's compact scope): [N,R,R,3] -> [N,stop,stop,ch(stop)]."""
    r = cfg.resolution
    while r > stop:
        x = DownBlock(cfg, r, first=r == cfg.resolution, name=f"b{r}")(x)
        r //= 2
    return x


class EncoderCore(nn.Module):
    """b{C}: the residual bottleneck, the content head and the style head's first stride-2 conv."""
    cfg: GNRConfig

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        c = self.cfg
        ch = c.channels(c.content_res)
        for i in range(c.n_res):
            x = _Res(c, name=f"res{i}")(x)
        content = Conv2d(ch, kernel=1, act="lrelu", name="content0")(x)
        content = Conv2d(ch, kernel=1, act="lrelu", name="content1")(content)
        if c.content_res > 4:
            x = _down_conv(c, x, c.content_res, "style")
        return content, x


class _Res(nn.Module):
    """A residual block without downsampling (identity skip), rosinality ResBlock(C, C, downsample=False)."""
    cfg: GNRConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        ch = x.shape[-1]
        return d_res_body(x, ch, ch, down=False, conv_impl=self.cfg.conv_impl)


class StyleConv(nn.Module):
    """b{res} (res < C) of the style head: one stride-2 3x3 conv res -> res/2."""
    cfg: GNRConfig
    res: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return _down_conv(self.cfg, x, self.res, "style")


class StyleOut(nn.Module):
    """b4 of the style head: flatten -> fc (lrelu) -> style_out (linear) -> [N, latent_dim]."""
    cfg: GNRConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = Dense(self.cfg.channels(4), act="lrelu", name="fc")(_flatten_nchw(x))
        return Dense(self.cfg.latent_dim, name="style_out")(x)


class Encoder(nn.Module):
    """image [N,R,R,3] -> (content [N,C,C,ch(C)], style [N,latent_dim])."""
    cfg: GNRConfig

    @nn.compact
    def __call__(self, img: Array) -> tuple[Array, Array]:
        c = self.cfg
        want = (c.resolution, c.resolution, c.img_channels)
        if img.ndim != 4 or img.shape[1:] != want:
            raise ValueError(f"GNR encoder expects images [N, {', '.join(map(str, want))}]; got {img.shape}")
        x = _tower(c, img.astype(jnp.float32), c.content_res)
        if c.content_res == 4:            # the bottleneck block also holds the head
            content, x = EncoderCore(c, name="b4")(x)
            return content, StyleOut(c, name="b4_out")(x)
        content, x = EncoderCore(c, name=f"b{c.content_res}")(x)
        r = c.content_res // 2
        while r > 4:
            x = StyleConv(c, r, name=f"b{r}")(x)
            r //= 2
        return content, StyleOut(c, name="b4")(x)


class Mapping(nn.Module):
    """style code [N,latent_dim] -> w [N,style_dim]: n_mlp x (Dense lr_mul 0.01, lrelu); no PixelNorm."""
    cfg: GNRConfig

    @nn.compact
    def __call__(self, s: Array) -> Array:
        c = self.cfg
        x = s.astype(jnp.float32)
        for i in range(c.n_mlp):
            x = Dense(c.style_dim, lr_mul=c.lr_mlp, act="lrelu", name=f"fc{i}")(x)
        return x


class _StyledRes(nn.Module):
    """rosinality StyledResBlock: two modulated 3x3 convs, (out + x) / sqrt(2)."""
    cfg: GNRConfig

    @nn.compact
    def __call__(self, x: Array, w: Array) -> Array:
        ch, kw = x.shape[-1], dict(use_noise=False, conv_impl=self.cfg.conv_impl)
        y = SynthesisLayer(ch, x.shape[1], name="conv0", **kw)(x, w)
        y = SynthesisLayer(ch, x.shape[1], name="conv1", **kw)(y, w)
        return (y + x) * math.sqrt(0.5)


class DecoderBlock(nn.Module):
    """b{res}: at C the bottleneck + conv1 + torgb; above, conv0 (x2 up) + conv1 + torgb added to the upsampled
    image (StyleGAN2 'skip'; no noise, one w for every layer)."""
    cfg: GNRConfig
    res: int

    @nn.compact
    def __call__(self, x: Array, img: Array | None, w: Array) -> tuple[Array, Array]:
        c, r = self.cfg, self.res
        kw = dict(use_noise=False, conv_impl=c.conv_impl)
        if img is None:
            for i in range(c.n_res):
                x = _StyledRes(c, name=f"res{i}")(x, w)
        else:
            x = SynthesisLayer(c.channels(r), r, up=2, name="conv0", **kw)(x, w)
        x = SynthesisLayer(c.channels(r), r, name="conv1", **kw)(x, w)
        y = ToRGB(c.img_channels, name="torgb")(x, w)
        return x, y if img is None else upsample2d(img) + y


class Decoder(nn.Module):
    """(content [N,C,C,ch(C)], w [N,style_dim]) -> image [N,R,R,3] (no tanh, as the reference)."""
    cfg: GNRConfig

    @nn.compact
    def __call__(self, content: Array, w: Array) -> Array:
        c = self.cfg
        want = (c.content_res, c.content_res, c.channels(c.content_res))
        if content.ndim != 4 or content.shape[1:] != want:
            raise ValueError(f"GNR decoder expects content codes [N, {', '.join(map(str, want))}]; "
                             f"got {content.shape}")
        x, img, r = content, None, c.content_res
        while r <= c.resolution:
            x, img = DecoderBlock(c, r, name=f"b{r}")(x, img, w)
            r *= 2
        return img


class Generator(nn.Module):
    """encoder + mapping + decoder; entry points encode / style_encode / map / decode (apply(..., method=...))."""
    cfg: GNRConfig

    def setup(self):
        self.encoder = Encoder(self.cfg)
        self.mapping = Mapping(self.cfg)
        self.decoder = Decoder(self.cfg)

    def __call__(self, img: Array, s: Array | None = None) -> Array:
        """Translate with the image's own style, or with style codes s [N,latent_dim]."""
        content, style = self.encoder(img)
        return self.decoder(content, self.mapping(style if s is None else s))

    def encode(self, img: Array) -> tuple[Array, Array]:
        return self.encoder(img)

    def style_encode(self, img: Array) -> Array:
        return self.encoder(img)[1]

    def map(self, s: Array) -> Array:
        return self.mapping(s)

    def decode(self, content: Array, s: Array, use_mapping: bool = True) -> Array:
        """s: style codes [N,latent_dim], or w [N,style_dim] with use_mapping=False."""
        return self.decoder(content, self.mapping(s) if use_mapping else s)


class _Conv1x1Out(nn.Module):
    """b{l} of the local branch: the 1x1 conv to one logit per patch."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return Conv2d(1, kernel=1, name="out")(x)[..., 0]


class _GlobalEnd(nn.Module):
    """b{g} of the global branch: its 1x1 logits and the diversity head's stride-2 conv."""
    cfg: GNRConfig

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        c = self.cfg
        logits = Conv2d(1, kernel=1, name="out")(x)[..., 0]
        return logits, _down_conv(c, x, c.global_res, "std_conv")


class _DiversityOut(nn.Module):
    """b{g/2}: flatten -> std_fc (lrelu) -> per-feature std inside each group -> std_out: one logit per group."""
    cfg: GNRConfig

    @nn.compact
    def __call__(self, x: Array, group: int) -> Array:
        f = Dense(self.cfg.diversity_features, act="lrelu", name="std_fc")(_flatten_nchw(x))       # [N,F]
        std = group_feature_std(f.reshape(-1, group, f.shape[-1]))                                  # [G,F]
        return Dense(1, name="std_out")(std)[:, 0]                                                  # [G]


class Discriminator(nn.Module):
    """images [G,g,R,R,3] (G content groups of g) -> (local [G,g,l,l], global [G,g,gr,gr], diversity [G,g]).

    The diversity logit sees only the spread of features across a group (the same value for its g members)."""
    cfg: GNRConfig

    @nn.compact
    def __call__(self, img: Array) -> tuple[Array, Array, Array]:
        c = self.cfg
        want = (c.resolution, c.resolution, c.img_channels)
        if img.ndim != 5 or img.shape[2:] != want:
            raise ValueError(f"GNR D expects images [groups, group size, {', '.join(map(str, want))}]; "
                             f"got {img.shape}")
        ng, g = img.shape[:2]
        x = img.reshape(ng * g, *want).astype(jnp.float32)
        local = _Branch(c, "local", name="local")(x, g)
        glob, div = _Branch(c, "global", name="global")(x, g)
        shape = lambda a: a.reshape(ng, g, *a.shape[1:])                              # noqa: E731
        return shape(local), shape(glob), jnp.broadcast_to(div[:, None], (ng, g))


class _Branch(nn.Module):
    cfg: GNRConfig
    kind: str                         # 'local' | 'global'

    @nn.compact
    def __call__(self, x: Array, group: int):
        c = self.cfg
        if self.kind == "local":
            return _Conv1x1Out(name=f"b{c.local_res}")(_tower(c, x, c.local_res))
        logits, feat = _GlobalEnd(c, name=f"b{c.global_res}")(_tower(c, x, c.global_res))
        return logits, _DiversityOut(c, name=f"b{c.global_res // 2}")(feat, group)


class LatentDiscriminator(nn.Module):
    """style codes [G,g,latent_dim] -> logits [G,g]: 4 x (Dense, lrelu), minibatch std (the group's per-feature std
    averaged over features, appended as one input), Dense (lrelu), Dense -> 1 (GANsNRoses LatDiscriminator)."""
    cfg: GNRConfig

    @nn.compact
    def __call__(self, s: Array) -> Array:
        c = self.cfg
        if s.ndim != 3 or s.shape[-1] != c.latent_dim:
            raise ValueError(f"GNR latent D expects codes [groups, group size, {c.latent_dim}]; got {s.shape}")
        x = s.astype(jnp.float32)
        for i in range(4):
            x = Dense(c.latent_d_width, act="lrelu", name=f"fc{i}")(x)                         # [G,g,W]
        std = jnp.mean(group_feature_std(x), axis=-1)                                           # [G]
        x = jnp.concatenate([x, jnp.broadcast_to(std[:, None, None], (*x.shape[:2], 1))], axis=-1)
        x = Dense(c.latent_d_width, act="lrelu", name="mbstd_fc")(x)
        return Dense(1, name="out")(x)[..., 0]


@functools.lru_cache(maxsize=16)
def _init_fns(cfg: GNRConfig):
    """One jitted init per network kind and config (numpy dummies: see nets.spade._init_fns)."""
    r = cfg.resolution
    img = np.zeros((1, r, r, cfg.img_channels), np.float32)
    g = init_jit(lambda k: Generator(cfg).init({"params": k}, img))
    d = init_jit(lambda k: Discriminator(cfg).init({"params": k}, img[None]))
    lat = init_jit(lambda k: LatentDiscriminator(cfg).init({"params": k}, np.zeros((1, 1, cfg.latent_dim),
                                                                                   np.float32)))
    return g, d, lat


def init_generator(cfg: GNRConfig, key: Array) -> dict:
    return _init_fns(cfg)[0](key)


def init_discriminator(cfg: GNRConfig, key: Array) -> dict:
    return _init_fns(cfg)[1](key)


def init_latent_discriminator(cfg: GNRConfig, key: Array) -> dict:
    return _init_fns(cfg)[2](key)


def init_model(cfg: GNRConfig, key: Array) -> dict:
    """Variables of every network (NETWORKS): both generators, both image Ds and the latent D."""
    k = jax.random.split(key, 5)
    return {"G": init_generator(cfg, k[0]), "G_B2A": init_generator(cfg, k[1]),
            "D_A": init_discriminator(cfg, k[2]), "D_B": init_discriminator(cfg, k[3]),
            "D_L": init_latent_discriminator(cfg, k[4])}


def network_vars(g_vars: dict) -> dict:
    """G's variables without the model file's previews (what Generator.apply takes)."""
    return {k: v for k, v in g_vars.items() if k != PREVIEWS}


@functools.lru_cache(maxsize=16)
def translate_fn(cfg: GNRConfig):
    """jit((g_vars, images [N,R,R,3] float, s [N,S,latent_dim]) -> [N,S,R,R,3] float): each image's content
    decoded under S style codes (the content is encoded once)."""
    def run(g_vars, x, s):
        g = Generator(cfg)
        content, _ = g.apply(g_vars, x, method=Generator.encode)                   # [N,C,C,ch]
        n, k = s.shape[:2]
        content = jnp.repeat(content, k, axis=0)                                    # [N*S,C,C,ch]
        out = g.apply(g_vars, content, s.reshape(n * k, -1), method=Generator.decode)
        return out.reshape(n, k, *out.shape[1:])
    fn = jax.jit(run)
    return lambda g_vars, x, s: fn(network_vars(g_vars), x, s)    # previews stay out of the program


@functools.lru_cache(maxsize=16)
def style_encode_fn(cfg: GNRConfig):
    """jit((g_vars, images [N,R,R,3] float) -> style codes [N,latent_dim])."""
    fn = jax.jit(lambda g_vars, x: Generator(cfg).apply(g_vars, x, method=Generator.style_encode))
    return lambda g_vars, x: fn(network_vars(g_vars), x)


def styles_from_seeds(cfg: GNRConfig, seeds: Sequence[int], psi: float = 1.0) -> np.ndarray:
    """One prior style code N(0, I) per seed (numpy RandomState, as nets.sampling), times psi: [N,latent_dim]."""
    return z_from_seeds(seeds, cfg.latent_dim) * np.float32(psi)


def check_images(cfg: GNRConfig, x: np.ndarray, what: str = "images") -> None:
    want = (cfg.resolution, cfg.resolution, cfg.img_channels)
    if x.ndim != 4 or x.shape[1:] != want:
        raise ValueError(f"{what} of shape {tuple(x.shape[1:])}; this GNR model translates "
                         f"{'x'.join(map(str, want))} images")


def translate(cfg: GNRConfig, g_vars: dict, faces: np.ndarray, styles: np.ndarray) -> np.ndarray:
    """faces uint8 (or [-1, 1] float) [N,R,R,3] under styles [N,S,latent_dim] (or [S,latent_dim] for all)
    -> uint8 [N,S,R,R,3]."""
    faces = np.asarray(faces)
    check_images(cfg, faces, "faces")
    s = np.asarray(styles, np.float32)
    if s.ndim == 2:
        s = np.broadcast_to(s[None], (faces.shape[0], *s.shape))
    if s.ndim != 3 or s.shape[0] != faces.shape[0] or s.shape[2] != cfg.latent_dim:
        raise ValueError(f"styles of shape {s.shape}; expected [{faces.shape[0]}, S, {cfg.latent_dim}]")
    return images.to_uint8(np.asarray(translate_fn(cfg)(g_vars, to_float(faces), jnp.asarray(s))))


def sample(cfg: GNRConfig, g_vars: dict, seeds: Sequence[int], *, psi: float = 1.0,
           noise_mode: str = "const") -> np.ndarray:
    """The registry renderer: seed s translates preview face s % N (G's 'previews', kept by a GNR export) under
    the prior style of seed s (times psi). GNR has no noise inputs. -> uint8 [len(seeds),R,R,3]."""
    del noise_mode
    if PREVIEWS not in g_vars:
        raise ValueError("this GNR generator carries no preview faces (G/previews/image); translate a photo with "
                         "`gafu gnr translate PHOTO --model M` instead")
    bank = np.asarray(g_vars[PREVIEWS]["image"])
    faces = bank[[s % len(bank) for s in seeds]]
    styles = styles_from_seeds(cfg, seeds, psi)[:, None]                             # [N,1,latent]
    return translate(cfg, g_vars, faces, styles)[:, 0]


def param_count(tree: PyTree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
