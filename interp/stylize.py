"""Neural style transfer by optimisation on VGG features (Gatys, Ecker & Bethge 2016; mattya/chainer-gogh).

The image itself is the variable, in 0..255 RGB pixel units (chainer-gogh's and neural-style's pixel scale, so
their learning rates and TV weights mean the same here). Loss, as mattya/chainer-gogh `chainer-gogh.py` and
jcjohnson/neural-style `neural_style.lua` compute it:

    content = content_weight * sum_l a_l * MSE(F_l(x), F_l(content))
    style   = style_weight   * sum_l b_l * MSE(G_l(x), sum_s w_s G_l(style_s))      G = F^T F / (C*H*W)
    tv      = tv_weight * 1/2 * sum (dx^2 + dy^2)

Our VGG weights are torchvision's (input normalised by ImageNet std) while both reference codes feed Caffe VGG
with raw 0..255 pixels; taps are therefore multiplied by `feature_scale` = 255 * mean(std) ~ 57.6 so that
feature magnitudes, and hence `lam` / content-style ratios, are on the references' scale. chainer-gogh pads
every image into a square canvas because its Gram divides by C*W^2; with C*H*W that canvas is not needed.

Colour preservation is Gatys et al. 2017's luminance-only transfer: content and styles are reduced to their
luminance (the style's mean/std matched to the content's), the optimisation runs on one luminance channel, and
the result's luminance is recombined with the content's YIQ chroma.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets import vgg

Array = jax.Array
LineSearch = Literal["zoom", "none"]
FEATURE_SCALE = 255.0 * float(np.mean(vgg.IMAGENET_STD))
# NTSC RGB -> YIQ (rows: Y, I, Q)
RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
                   np.float32)
YIQ2RGB = np.linalg.inv(RGB2YIQ).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    content_layers: tuple[tuple[str, float], ...]   # (tap, weight a_l)
    style_layers: tuple[tuple[str, float], ...]     # (tap, weight b_l)
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 0.0
    pooling: vgg.Pooling = "avg"
    feature_scale: float = FEATURE_SCALE            # taps are multiplied by this (see module docstring)
    optimizer: Literal["adam", "lbfgs"] = "adam"
    lr: float = 4.0                                 # Adam step, in 0..255 pixel units (unused by L-BFGS)
    steps: int = 1000
    init: Literal["noise", "content"] = "noise"
    noise: float = 20.0                             # init = mid-grey 120 + U(-noise, noise)
    clip: bool = True                               # keep pixels in [0, 255] after every Adam step
    preserve_color: bool = False                    # luminance-only transfer, content's chroma kept
    size: int = 256                                 # long side of the output, pixels
    style_scale: float = 1.0                        # style images' long side = size * style_scale
    lbfgs_memory: int = 10
    linesearch: LineSearch = "none"                 # L-BFGS: optax zoom line search, or unit steps (neural-style)

    def replace(self, **kw: Any) -> "StyleConfig":
        return dataclasses.replace(self, **kw)


PRESETS: dict[str, StyleConfig] = {
    # mattya/chainer-gogh `-m vgg`: VGG-16 pre-ReLU taps, alpha [0,0,1,1] * lam, beta [1,1,1,1] / 4, avg pool,
    # Adam lr 4 in 0..255, clip, noise init +-20, 5000 iterations, width 435.
    "chainer-gogh": StyleConfig(
        content_layers=(("conv3_3", 1.0), ("conv4_3", 1.0)),
        style_layers=(("conv1_2", 0.25), ("conv2_2", 0.25), ("conv3_3", 0.25), ("conv4_3", 0.25)),
        content_weight=0.005, style_weight=1.0, tv_weight=0.0, pooling="avg", optimizer="adam", lr=4.0,
        steps=5000, init="noise", noise=20.0, clip=True, size=435),
    # Gatys et al. layers (conv4_2 content; conv1_1..conv5_1 styles, post-ReLU as Caffe's in-place ReLU blobs)
    # with jcjohnson/neural-style's weights: content 5, style 100, tv 1e-3; L-BFGS without line search (its
    # optim.lbfgs), 1000 iterations, 512 px; average pooling as in the paper.
    "gatys": StyleConfig(
        content_layers=(("relu4_2", 1.0),),
        style_layers=tuple((f"relu{b}_1", 1.0) for b in range(1, 6)),
        content_weight=5.0, style_weight=100.0, tv_weight=1e-3, pooling="avg", optimizer="lbfgs", lr=1.0,
        steps=1000, init="noise", noise=20.0, clip=False, size=512),
}


# ----------------------------------------------------------------------------------------------------------------
# Pure pieces


def gram(f: Array) -> Array:
    """Feature maps [N,H,W,C] -> Gram matrices [N,C,C], divided by C*H*W."""
    n, h, w, c = f.shape
    f = f.reshape(n, h * w, c)                                          # [N,HW,C]
    return jnp.einsum("npc,npd->ncd", f, f) / float(c * h * w)


def total_variation(x: Array) -> Array:
    """1/2 * sum of squared forward differences, per image: [N,H,W,C] -> [N]."""
    dy = jnp.square(x[:, 1:, :, :] - x[:, :-1, :, :])
    dx = jnp.square(x[:, :, 1:, :] - x[:, :, :-1, :])
    return 0.5 * (jnp.sum(dy, axis=(1, 2, 3)) + jnp.sum(dx, axis=(1, 2, 3)))


def rgb_to_yiq(x: np.ndarray | Array) -> Array:
    """[..., 3] RGB -> YIQ (same units)."""
    return jnp.einsum("...c,yc->...y", x, jnp.asarray(RGB2YIQ))


def yiq_to_rgb(x: np.ndarray | Array) -> Array:
    return jnp.einsum("...y,cy->...c", x, jnp.asarray(YIQ2RGB))


def luminance_match(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Style luminance [H,W] with its mean/std matched to the content luminance's (Gatys et al. 2017 §5)."""
    s_std = float(style.std())
    return (style - style.mean()) * (float(content.std()) / max(s_std, 1e-6)) + float(content.mean())


def _taps(cfg: StyleConfig) -> tuple[str, ...]:
    return tuple(dict.fromkeys([t for t, _ in cfg.content_layers] + [t for t, _ in cfg.style_layers]))


def _vgg_taps(params: vgg.Params, img255: Array, taps: Sequence[str], cfg: StyleConfig) -> dict[str, Array]:
    if img255.shape[-1] == 1:                       # luminance-only: a grey picture for the RGB network
        img255 = jnp.concatenate([img255] * 3, axis=-1)
    f = vgg.features(params, img255, taps, pooling=cfg.pooling, input_range=(0.0, 255.0))
    return {t: v * cfg.feature_scale for t, v in f.items()}


def targets(params: vgg.Params, content255: Array, styles255: Sequence[Array], style_weights: Sequence[float],
            cfg: StyleConfig) -> dict[str, dict[str, Array]]:
    """Content features and blended style Grams: {"content": {tap: [1,h,w,C]}, "style": {tap: [1,C,C]}}."""
    if len(styles255) != len(style_weights) or not styles255:
        raise ValueError(f"need one weight per style image; got {len(styles255)} styles, "
                         f"{len(style_weights)} weights")
    w = np.asarray(style_weights, np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"style weights must be non-negative with a positive sum; got {list(style_weights)}")
    w = w / w.sum()                                  # blended Gram target: order and total scale do not matter
    ctaps = tuple(t for t, _ in cfg.content_layers)
    staps = tuple(t for t, _ in cfg.style_layers)
    content = _vgg_taps(params, content255, ctaps, cfg)
    grams = {t: 0.0 for t in staps}
    for s, ws in zip(styles255, w):
        fs = _vgg_taps(params, s, staps, cfg)
        grams = {t: grams[t] + float(ws) * gram(fs[t]) for t in staps}
    return {"content": content, "style": grams}


def loss_terms(img255: Array, params: vgg.Params, tgt: dict, cfg: StyleConfig) -> dict[str, Array]:
    """Scalar loss parts {"content", "style", "tv"} of an image [1,H,W,C] against `targets`."""
    f = _vgg_taps(params, img255, _taps(cfg), cfg)
    content = sum(a * jnp.mean(jnp.square(f[t] - tgt["content"][t])) for t, a in cfg.content_layers)
    style = sum(b * jnp.mean(jnp.square(gram(f[t]) - tgt["style"][t])) for t, b in cfg.style_layers)
    return {"content": cfg.content_weight * content, "style": cfg.style_weight * style,
            "tv": cfg.tv_weight * jnp.sum(total_variation(img255))}


def total_loss(img255: Array, params: vgg.Params, tgt: dict, cfg: StyleConfig) -> Array:
    return sum(loss_terms(img255, params, tgt, cfg).values())


class _FirstStepState(NamedTuple):
    count: Array


def _cautious_first_step() -> optax.GradientTransformation:
    """Scale the very first update by min(1, 1/||g||_1), as torch's optim.lbfgs does without a line search: with an
    identity preconditioner the first step would otherwise be the raw gradient, of arbitrary size."""
    def init(params):
        return _FirstStepState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        l1 = sum(jnp.sum(jnp.abs(u)) for u in jax.tree.leaves(updates))
        s = jnp.where(state.count == 0, jnp.minimum(1.0, 1.0 / jnp.maximum(l1, 1e-30)), 1.0)
        return jax.tree.map(lambda u: u * s.astype(u.dtype), updates), _FirstStepState(state.count + 1)

    return optax.GradientTransformation(init, update)


def lbfgs(memory: int, linesearch: LineSearch) -> optax.GradientTransformation:
    """L-BFGS with optax's zoom (strong Wolfe) line search, or with none: unit steps after a cautious first one
    (jcjohnson/neural-style's and chainer-dfi's choice). Without the line search an iteration is one loss+gradient
    evaluation; with it optax's while-loop costs about 3 of them on CPU for the same progress (benchmarks/)."""
    if linesearch == "zoom":
        return optax.lbfgs(memory_size=memory)
    if linesearch == "none":
        return optax.chain(optax.scale_by_lbfgs(memory_size=memory), _cautious_first_step(), optax.scale(-1.0))
    raise ValueError(f"unknown line search {linesearch!r}; expected 'zoom' or 'none'")


def init_state(opt: optax.GradientTransformation, z: Array) -> Any:
    """opt.init(z) as fresh, strongly typed buffers. Fresh, so that donating them is legal (optax's L-BFGS state
    holds the same array twice); strongly typed, because the jitted step returns them so: optax's zoom line search
    starts from weak-typed scalars, which would compile the step a second time on its second call."""
    return jax.tree.map(lambda x: jnp.array(x, dtype=x.dtype), opt.init(z))


def optimizer_step(opt: optax.GradientTransformation, f: Callable[[Array], Array], z: Array, opt_state: Any,
                   linesearch: LineSearch | None) -> tuple[Array, Any, Array]:
    """One iteration of `opt` on the scalar function f at z -> (z, opt_state, f(z) before the step)."""
    if linesearch == "zoom":
        loss, g = optax.value_and_grad_from_state(f)(z, state=opt_state)
        upd, opt_state = opt.update(g, opt_state, z, value=loss, grad=g, value_fn=f)
    else:
        loss, g = jax.value_and_grad(f)(z)
        upd, opt_state = opt.update(g, opt_state, z)
    return optax.apply_updates(z, upd), opt_state, loss


def make_optimizer(cfg: StyleConfig) -> optax.GradientTransformation:
    if cfg.optimizer == "adam":
        return optax.adam(cfg.lr)
    if cfg.optimizer == "lbfgs":
        return lbfgs(cfg.lbfgs_memory, cfg.linesearch)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected 'adam' or 'lbfgs'")


def make_step(cfg: StyleConfig) -> Callable:
    """jit(step)(img, opt_state, params, tgt) -> (img, opt_state, loss), one optimiser iteration."""
    # Fields that do not enter the step are blanked so that configs differing only in them share one compile.
    return _make_step(cfg.replace(steps=0, init="noise", noise=0.0, preserve_color=False, size=0, style_scale=1.0))


@functools.lru_cache(maxsize=8)
def _make_step(cfg: StyleConfig) -> Callable:
    opt = make_optimizer(cfg)
    ls = cfg.linesearch if cfg.optimizer == "lbfgs" else None

    def step(img, opt_state, params, tgt):
        f = functools.partial(total_loss, params=params, tgt=tgt, cfg=cfg)
        img, opt_state, loss = optimizer_step(opt, f, img, opt_state, ls)
        if cfg.clip and cfg.optimizer == "adam":    # clipping would corrupt L-BFGS's curvature pairs
            img = jnp.clip(img, 0.0, 255.0)
        return img, opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


# ----------------------------------------------------------------------------------------------------------------
# Driver


def resize_long(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 or float [H,W,C] -> float32 0..255 with its long side = size (Lanczos, aspect kept)."""
    from PIL import Image
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"expected an RGB or grey image [H,W,3|1]; got shape {img.shape}")
    h, w = img.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], np.float32)).resize(
        (nw, nh), Image.LANCZOS)) for c in range(img.shape[-1])]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.float32)


@dataclasses.dataclass
class StylizeResult:
    image: np.ndarray             # uint8 [H,W,3]
    losses: np.ndarray            # float32 [steps], the loss before each step
    parts: dict[str, float]       # final content / style / tv


def stylize(params: vgg.Params, content: np.ndarray, styles: Sequence[np.ndarray], cfg: StyleConfig,
            style_weights: Sequence[float] | None = None, seed: int = 0, progress: bool = True,
            snapshot_every: int = 0, on_snapshot: Callable[[int, np.ndarray], None] | None = None,
            log_every: int = 10) -> StylizeResult:
    """Optimise an image that has `content`'s features and the styles' Grams. Images: [H,W,3] uint8 RGB."""
    from tqdm.auto import tqdm

    if cfg.steps < 1:
        raise ValueError(f"steps must be >= 1; got {cfg.steps}")
    style_weights = list(style_weights) if style_weights is not None else [1.0] * len(styles)
    params = vgg.with_dx_kernels(jax.device_put(params))          # once, not on every step
    c = resize_long(content, cfg.size)                                     # [H,W,3] 0..255
    ss = [resize_long(s, max(16, round(cfg.size * cfg.style_scale))) for s in styles]
    if cfg.preserve_color:
        cy = np.asarray(rgb_to_yiq(c))[..., :1]                            # [H,W,1]
        ss = [luminance_match(np.asarray(rgb_to_yiq(s))[..., :1], cy) for s in ss]
        c_work = cy
    else:
        c_work = c
    tgt = jax.jit(functools.partial(targets, cfg=cfg, style_weights=style_weights))(
        params, jnp.asarray(c_work)[None], [jnp.asarray(s)[None] for s in ss])

    if cfg.init == "content":
        img = jnp.asarray(c_work)[None]
    elif cfg.init == "noise":
        img = 120.0 + jax.random.uniform(jax.random.key(seed), (1, *c_work.shape), minval=-cfg.noise,
                                         maxval=cfg.noise)
    else:
        raise ValueError(f"unknown init {cfg.init!r}; expected 'noise' or 'content'")
    img = img.astype(jnp.float32)
    opt_state = init_state(make_optimizer(cfg), img)
    step = make_step(cfg)
    losses = []
    bar = tqdm(range(cfg.steps), desc=f"stylize {cfg.optimizer}", unit="it", disable=not progress)
    for i in bar:
        img, opt_state, loss = step(img, opt_state, params, tgt)
        losses.append(loss)
        if (i + 1) % log_every == 0 or i + 1 == cfg.steps:
            bar.set_postfix(loss=f"{float(loss):.4g}")                     # syncs every log_every steps only
        if on_snapshot and snapshot_every and (i + 1) % snapshot_every == 0 and i + 1 < cfg.steps:
            on_snapshot(i + 1, finish(img, c, cfg))
    parts = {k: float(v) for k, v in jax.jit(functools.partial(loss_terms, cfg=cfg))(img, params, tgt).items()}
    return StylizeResult(image=finish(img, c, cfg), losses=np.asarray(jax.device_get(losses), np.float32),
                         parts=parts)


def finish(img: Array, content255: np.ndarray, cfg: StyleConfig) -> np.ndarray:
    """Optimised variable [1,H,W,C] -> uint8 RGB [H,W,3] (recombining chroma in luminance-only mode)."""
    x = np.asarray(img[0], np.float32)
    if cfg.preserve_color:
        yiq = np.asarray(rgb_to_yiq(content255))
        x = np.asarray(yiq_to_rgb(np.concatenate([x[..., :1], yiq[..., 1:]], axis=-1)))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
