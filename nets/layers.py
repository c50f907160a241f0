"""The shared layer library: StyleGAN2's building blocks (Karras et al. 2020), in NHWC / HWIO.

Reused by SPADE and GANs N' Roses. The math lives in free functions; the modules only own parameters.
Reference: NVlabs/stylegan2-ada-pytorch `training/networks.py`, `torch_utils/ops/{upfirdn2d,conv2d_resample}.py`
(paddings and gains below follow those files exactly).

Equalized learning rate: every weight is stored as N(0, 1) / lr_mul and used as weight * lr_mul / sqrt(fan_in);
biases are stored raw and used as bias * lr_mul.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
NoiseMode = Literal["random", "const", "none"]

SQRT2 = float(np.sqrt(2.0))
FIR_1331 = (1.0, 3.0, 3.0, 1.0)  # the StyleGAN2 resample filter; used separably, normalised to sum 1
_DN = ("NHWC", "HWIO", "NHWC")


# ----------------------------------------------------------------------------------------------------------------
# Activation


def bias_act(x: Array, b: Array | None, act: str = "lrelu", gain: float | None = None,
             clamp: float | None = None) -> Array:
    """x + b, then activation, then gain (default sqrt(2) for lrelu), then optional clamp (NV `bias_act`)."""
    if b is not None:
        x = x + b.reshape((1,) * (x.ndim - 1) + (-1,)).astype(x.dtype)
    if act == "lrelu":
        x = jnp.where(x >= 0, x, x * 0.2)
        gain = SQRT2 if gain is None else gain
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}; expected 'lrelu' or 'linear'")
    if gain is not None and gain != 1:
        x = x * gain
    if clamp is not None:
        x = jnp.clip(x, -clamp, clamp)
    return x


def normalize_2nd_moment(x: Array, eps: float = 1e-8) -> Array:
    """PixelNorm over the last axis: x / sqrt(mean(x^2) + eps)."""
    return x * lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


# ----------------------------------------------------------------------------------------------------------------
# FIR resampling (upfirdn2d), separable


def _fir_taps(f: Sequence[float]) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    return f / f.sum()


def _upfirdn1d(x: Array, taps: np.ndarray, axis: int, up: int, down: int, pad0: int, pad1: int,
               gain: float) -> Array:
    """Zero-insert by `up`, pad (negative crops), convolve with `taps`, keep every `down`-th sample."""
    cfg = [(0, 0, 0)] * x.ndim
    # Zero insertion puts up-1 zeros after every sample (length n*up), then the edge padding.
    cfg[axis] = (pad0, pad1 + up - 1, up - 1)
    x = lax.pad(x, jnp.zeros((), x.dtype), cfg)
    k = len(taps)
    n_out = (x.shape[axis] - k) // down + 1
    if n_out < 1:
        raise ValueError(f"upfirdn2d: input of length {x.shape[axis]} too short for a {k}-tap filter")
    flipped = taps[::-1] * gain  # true convolution (the 1331 filter is symmetric anyway)
    out = None
    for j, t in enumerate(flipped):
        sl = lax.slice_in_dim(x, j, j + down * (n_out - 1) + 1, stride=down, axis=axis)
        out = sl * float(t) if out is None else out + sl * float(t)
    return out


def upfirdn2d(x: Array, f: Sequence[float] = FIR_1331, up: int = 1, down: int = 1,
              pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> Array:
    """NV `upfirdn2d` for a separable filter: x [N,H,W,C]; pad = (x0, x1, y0, y1) as in NV.

    The 2-D filter is outer(f, f) / sum^2; `gain` multiplies the 2-D filter (sqrt(gain) per axis).
    """
    taps = _fir_taps(f)
    g = float(np.sqrt(gain))
    x = _upfirdn1d(x, taps, axis=1, up=up, down=down, pad0=pad[2], pad1=pad[3], gain=g)
    return _upfirdn1d(x, taps, axis=2, up=up, down=down, pad0=pad[0], pad1=pad[1], gain=g)


def upsample2d(x: Array, f: Sequence[float] = FIR_1331) -> Array:
    """x2 upsampling of the ToRGB skip path: pad (2, 1) per axis, gain 4. [N,H,W,C] -> [N,2H,2W,C]."""
    return upfirdn2d(x, f, up=2, pad=(2, 1, 2, 1), gain=4.0)


def downsample2d(x: Array, f: Sequence[float] = FIR_1331) -> Array:
    """/2 downsampling with the FIR (pad (1, 1) per axis). [N,H,W,C] -> [N,H/2,W/2,C]."""
    return upfirdn2d(x, f, down=2, pad=(1, 1, 1, 1))


# ----------------------------------------------------------------------------------------------------------------
# Convolutions


# Winograd F(m x m, 3x3) (Lavin & Gray 2016): B^T [t,t], G [t,3], A^T [m,t] with t = m + 2. F(2x2) multiplies
# 16 times per 4 outputs (2.25x fewer than direct), F(4x4) 36 times per 16 (4x fewer) at more transform work.
_WINOGRAD = {
    2: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
    4: (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
         (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
         (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))),
}


def winograd_tile(x: Array) -> int:
    """Output tile m of the Winograd conv for x [N,H,W,I]: 4 when H and W divide by 4, else 2."""
    return 4 if x.shape[1] % 4 == 0 and x.shape[2] % 4 == 0 else 2


def conv3x3_winograd(x: Array, w: Array, m: int | None = None) -> Array:
    """'Same' 3x3 stride-1 correlation as (m+2)^2 batched matmuls. x [N,H,W,I] (H, W divisible by m), w [3,3,I,O].

    Equal to lax.conv up to float rounding (F(4x4) rounds ~7x more than XLA's conv: ~5e-5 on unit-variance
    activations). On CPU it beats XLA's conv: 2.25x (m=2) or 4x (m=4) fewer multiplies, all in matmuls.
    m defaults to winograd_tile(x). The backward is matmuls too (a custom VJP, so forward-mode autodiff through
    it is not available: use conv_impl='xla' for jax.jvp / jacfwd on CPU).
    """
    return _winograd(x, w, winograd_tile(x) if m is None else m)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _winograd(x: Array, w: Array, m: int) -> Array:
    return _winograd_raw(x, w, m)


def _winograd_fwd(x: Array, w: Array, m: int) -> tuple[Array, tuple[Array, Array]]:
    return _winograd_raw(x, w, m), (x, w)


def _winograd_bwd(m: int, res: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
    """dx is the same conv of dy with the flipped, channel-swapped kernel (a forward Winograd: no scatter of
    strided taps as autodiff would do); dw is `winograd_weight_grad`."""
    x, w = res
    dy = lax.optimization_barrier(dy)                                  # see `matmul`
    return _winograd_raw(dy, dx_kernel(w), m), winograd_weight_grad(_tied(x, dy), dy)


_winograd.defvjp(_winograd_fwd, _winograd_bwd)


def _winograd_raw(x: Array, w: Array, m: int) -> Array:
    """The Winograd conv itself, differentiated by autodiff (used inside the custom rule above).

    Both 2-D transforms are small matmuls with kron(B^T, B^T) and kron(A^T, A^T): one pass over each operand,
    where separable sums would re-read the t*t tile arrays for every output."""
    _, g, at = (np.asarray(a, np.float32) for a in _WINOGRAD[m])
    n, h, wd, i = x.shape
    o, t = w.shape[-1], m + 2
    th, tw = h // m, wd // m
    u = _winograd_input_tiles(x, m).reshape(t * t, -1, i)                               # B^T d B: [t*t,P,I]
    gm = jnp.asarray(g, w.dtype)
    v = jnp.einsum("ai,ijco,bj->abco", gm, w, gm).reshape(t * t, i, o)                  # G w G^T
    mm = jnp.einsum("kpi,kio->kpo", u, v)                                               # [t*t,P,O]
    y = jnp.einsum("ak,kpo->apo", jnp.asarray(np.kron(at, at), x.dtype), mm)           # A^T M A: [m*m,P,O]
    y = y.reshape(m, m, n, th, tw, o).transpose(2, 3, 0, 4, 1, 5)                      # [N,th,m,tw,m,O]
    return y.reshape(n, h, wd, o)


def _tied(x: Array, dy: Array) -> Array:
    """x, made to depend on dy: x + 0 * dy[0, ...]. A backward that re-forms x's Winograd tiles or im2col patches
    from this is neither merged with the forward's (XLA's CSE) nor computed before dy exists, so those 2.25-9x
    copies of x are not kept alive from the forward to the backward (GiBs in a GAN step at 256 px). XLA cannot
    fold the float 0 * y (NaN semantics); optimization barriers do not help on CPU, where CSE runs again after
    they are expanded. A non-finite dy[0, ...] turns the gradient non-finite, as it would be anyway."""
    return x + jnp.zeros((), x.dtype) * dy.reshape(-1)[0].astype(x.dtype)


def dx_kernel(w: Array) -> Array:
    """The kernel whose 'same' correlation with dy is a 'same' stride-1 conv's dx: flipped, in/out swapped."""
    return w[::-1, ::-1].transpose(0, 1, 3, 2)


def _conv_same(x: Array, w: Array) -> Array:
    """XLA's 'same' stride-1 correlation (on CPU a YNNPACK direct conv: near the machine's peak, forward and dx)."""
    k = w.shape[0]
    return lax.conv_general_dilated(x, w, (1, 1), [(k // 2, (k - 1) // 2)] * 2, dimension_numbers=_DN)


def winograd_weight_grad(x: Array, dy: Array) -> Array:
    """The weight gradient of a 'same' 3x3 stride-1 conv, sum_{n,h,w} xpad[n,h+a,w+b,i] dy[n,h,w,o], in the
    F(4x4, 3x3) Winograd domain. x [N,H,W,I], dy [N,H,W,O] -> [3,3,I,O].

    The transpose of the forward's three stages: dy's 4x4 output tiles go through A (kron(A, A)), the input's
    6x6 tiles through B^T d B as in the forward, a batched matmul over the 36 tile positions contracts samples
    and tiles (4x fewer multiplies than the direct sum), and G^T (.) G folds the 6x6 result back to 3x3.
    XLA:CPU's own weight gradient is a conv with a map-sized kernel, 2-5x slower. H and W are zero-padded to
    multiples of 4 (the padded outputs have dy = 0 and the padded inputs are the conv's own zero padding).
    """
    m, t = 4, 6
    _, g, at = (np.asarray(a, np.float32) for a in _WINOGRAD[m])
    n, h, wd, i = x.shape
    o = dy.shape[-1]
    ph, pw = -h % m, -wd % m
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
        dy = jnp.pad(dy, ((0, 0), (0, ph), (0, pw), (0, 0)))
    th, tw = (h + ph) // m, (wd + pw) // m
    u = _winograd_input_tiles(x, m).reshape(t * t, -1, i)                               # [36,P,I]
    dyt = dy.reshape(n, th, m, tw, m, o).transpose(2, 4, 0, 1, 3, 5).reshape(m * m, -1, o)   # [16,P,O]
    dm = jnp.einsum("ak,apo->kpo", jnp.asarray(np.kron(at, at), dy.dtype), dyt)         # [36,P,O]
    dv = jnp.einsum("kpi,kpo->kio", u, dm).reshape(t, t, i, o)                          # [6,6,I,O]
    gm = jnp.asarray(g, dv.dtype)
    return jnp.einsum("ar,abio,bs->rsio", gm, dv, gm)


# Where conv3x3 takes Winograd F(4x4) for the forward and dx, measured on CPU against YNNPACK's direct conv: maps
# of at least 64x64 and convs at least this wide (in * out channels): 256^2 without weight gradients (1.3-1.8x
# faster there: 8x64x64 512->512 0.43 s vs 0.72 s), 128^2 in a training step (fwd + dx + dw at batch 4: 256->128
# at 128x128 0.39 s vs 0.42 s). Narrower convs and smaller maps are faster direct.
WINOGRAD_MIN_PIXELS = 64 * 64
WINOGRAD_MIN_WIDTH = {False: 256 * 256, True: 128 * 128}     # by: is w trained?


def _winograd_wins(x: Array, w: Array, trained: bool) -> bool:
    h, wd = x.shape[1:3]
    return (h % 4 == 0 and wd % 4 == 0 and h * wd >= WINOGRAD_MIN_PIXELS
            and w.shape[2] * w.shape[3] >= WINOGRAD_MIN_WIDTH[trained])


# Maps this small (pixels per image) take conv3x3's im2col matmul for every pass, 256 when w is trained: there
# XLA:CPU leaves YNNPACK for a generic conv (1x2x2 512->512 forward + dx 30 ms vs 0.6 ms as a matmul), and the
# kernel flip its dx needs is a transposing copy of the whole weight, while the matmul's dx reads w as stored.
IM2COL_MAX_PIXELS = {False: 8 * 8, True: 16 * 16}                 # by: is w trained?


def _im2col_wins(x: Array, trained: bool) -> bool:
    return x.shape[1] * x.shape[2] <= IM2COL_MAX_PIXELS[trained]


def _conv_im2col_same(x: Array, w: Array) -> Array:
    return conv_im2col(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), w, 1)


def _conv3x3_pass(x: Array, w: Array, trained: bool) -> Array:
    """The forward of conv3x3 in the form that wins for this shape (differentiable by autodiff)."""
    if _im2col_wins(x, trained):
        return _conv_im2col_same(x, w)
    return _winograd_raw(x, w, 4) if _winograd_wins(x, w, trained) else _conv_same(x, w)


def conv3x3(x: Array, w: Array, w_dx: Array | None = None) -> Array:
    """'Same' 3x3 stride-1 correlation, each pass by its fastest CPU form. x [N,H,W,I], w [3,3,I,O] -> [N,H,W,O].

    Forward and dx are XLA's conv (YNNPACK's direct conv, near the machine's peak), Winograd F(4x4) for wide
    convs on large maps (`_winograd_wins`), or one im2col matmul on small maps (`_im2col_wins`). When w is
    trained, the weight gradient is `winograd_weight_grad` (XLA's is a conv with a map-sized kernel, 2-5x
    slower), or the im2col matmul's. Gradients nobody asked for (dw in style transfer, projection and VGG
    losses; dx of a first layer) are not formed. The backward is differentiable (double backprop for R1).
    A custom VJP: no forward-mode autodiff (use conv_impl='xla').

    `w_dx` [3,3,O,I]: `dx_kernel(w)`, formed once by a caller whose w stays fixed over many steps (a frozen VGG),
    so that the backward reads it instead of flipping and transposing w in every step (XLA:CPU's copy of a
    3x3x512x512 kernel takes 2-7 ms). With it, w must not be differentiated.
    """
    if w_dx is not None and w_dx.shape != (*w.shape[:2], w.shape[3], w.shape[2]):
        raise ValueError(f"conv3x3: w_dx has shape {w_dx.shape}; dx_kernel of a {w.shape} kernel is "
                         f"{(*w.shape[:2], w.shape[3], w.shape[2])}")
    return _conv3x3(x, w, w_dx)


@jax.custom_vjp
def _conv3x3(x: Array, w: Array, w_dx: Array | None) -> Array:
    return _conv3x3_pass(x, w, False)


def _conv3x3_fwd(xp, wp, w_dxp) -> tuple[Array, tuple]:
    x, w = xp.value, wp.value
    w_dx = None if w_dxp is None else w_dxp.value
    if w_dx is not None and (wp.perturbed or w_dxp.perturbed):
        raise ValueError("conv3x3: a precomputed w_dx is for a fixed kernel; differentiate w without it")
    y = _conv3x3_pass(x, w, wp.perturbed)
    # which gradients are wanted, as residual structure (static in the backward): () yes, None no
    return y, (x, w, w_dx, () if xp.perturbed else None, () if wp.perturbed else None)


def _conv3x3_bwd(res: tuple, dy: Array) -> tuple[Array | None, Array | None, None]:
    x, w, w_dx, want_dx, want_dw = res
    if isinstance(dy, jax.custom_derivatives.SymbolicZero):
        return None, None, None
    trained = want_dw is not None
    if _im2col_wins(x, trained):                                       # small maps: autodiff of the matmul form
        dx, dw = jax.vjp(_conv_im2col_same, x, w)[1](dy)
        return (None if want_dx is None else dx), (dw if trained else None), None
    dy = lax.optimization_barrier(dy)                                  # see `matmul`
    wt = dx_kernel(w) if w_dx is None else w_dx
    wino = _winograd_wins(x, w, trained)
    dx = None if want_dx is None else (_winograd_raw(dy, wt, 4) if wino else _conv_same(dy, wt))
    dw = winograd_weight_grad(_tied(x, dy), dy) if trained else None              # tiles re-formed: see _tied
    return dx, dw, None


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd, symbolic_zeros=True)


def _winograd_input_tiles(x: Array, m: int) -> Array:
    """B^T d B of every (m+2)^2 input tile (stride m, 'same' zero padding): [N,H,W,I] -> [t*t,N,H/m,W/m,I]."""
    bt = np.asarray(_WINOGRAD[m][0], np.float32)
    n, h, wd, i = x.shape
    t, th, tw = m + 2, h // m, wd // m
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))                                    # [N,H+2,W+2,I]
    d = jnp.stack([lax.slice(xp, (0, a, b, 0), (n, a + m * (th - 1) + 1, b + m * (tw - 1) + 1, i), (1, m, m, 1))
                   for a in range(t) for b in range(t)])                                 # [t*t,N,th,tw,I] tiles
    return jnp.einsum("kq,qnhwi->knhwi", jnp.asarray(np.kron(bt, bt), x.dtype), d)


@jax.custom_vjp
def conv_transpose_polyphase(x: Array, w: Array) -> Array:
    """torch conv_transpose2d(x, W, stride=2) for a 3x3 kernel, as 4 per-phase matmuls; zero-padded to 2H+2.

    x [N,H,W,I], w [3,3,I,O] -> [N,2H+2,2W+2,O] whose last row and column are zero (the transposed conv is
    2H+1 long). Output row 2m takes W[0] x[m] + W[2] x[m-1] and row 2m+1 takes W[1] x[m]: 9 taps in all, with
    no multiplies by the zeros a dilated conv inserts. A custom VJP that keeps x, not the 9x larger patches, and
    re-forms them in the backward (`_tied`); no forward-mode autodiff (conv_impl='xla' has it).
    """
    return _polyphase_raw(x, w)


def _polyphase_fwd(x: Array, w: Array) -> tuple[Array, tuple[Array, Array]]:
    return _polyphase_raw(x, w), (x, w)


def _polyphase_bwd(res: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
    x, w = res
    return jax.vjp(_polyphase_raw, _tied(x, dy), w)[1](dy)


conv_transpose_polyphase.defvjp(_polyphase_fwd, _polyphase_bwd)


def _polyphase_raw(x: Array, w: Array) -> Array:
    n, h, wd, i = x.shape
    o = w.shape[-1]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))                  # xp[j] = x[j-1]
    taps = {0: ((0, 2), (1, 0)), 1: ((1, 1),)}                           # phase -> ((xp offset, kernel tap), ...)
    phases = []
    for a in (0, 1):
        row = []
        for b in (0, 1):
            cols = [xp[:, ra:ra + h + 1, cb:cb + wd + 1] for ra, _ in taps[a] for cb, _ in taps[b]]
            k = jnp.concatenate([w[ka, kb] for _, ka in taps[a] for _, kb in taps[b]], axis=0)  # [T*I,O]
            patches = jnp.concatenate(cols, axis=-1).reshape(-1, k.shape[0])                   # [P,T*I]
            row.append(matmul(patches, k).reshape(n, h + 1, wd + 1, o))
        phases.append(jnp.stack(row, axis=3))                            # [N,H+1,W+1,2,O]
    y = jnp.stack(phases, axis=2)                                        # [N,H+1,2,W+1,2,O]
    return y.reshape(n, 2 * h + 2, 2 * wd + 2, o)


@jax.custom_jvp
def matmul(a: Array, b: Array) -> Array:
    """a [P,K] @ b [K,O], whose backward materialises the incoming gradient before using it.

    Without the barrier XLA:CPU fuses the sum that forms dy (and its pads) into the transposed copy its weight-
    gradient dot needs, re-reading several arrays in a cache-hostile order (~10x slower than a plain copy).
    A custom JVP (rather than VJP) keeps forward-mode autodiff working: JAX transposes the tangent map, and the
    barrier on the tangent becomes a barrier on the cotangent.
    """
    return a @ b


@matmul.defjvp
def _matmul_jvp(primals: tuple[Array, Array], tangents: tuple[Array, Array]) -> tuple[Array, Array]:
    a, b = primals
    da, db = tangents
    return a @ b, lax.optimization_barrier(da @ b + a @ db)


def _patches(x: Array, k: int, stride: int) -> Array:
    """im2col: [N,H,W,I] -> [N*Ho*Wo, k*k*I], taps in (row, col, channel) order as w.reshape(k*k*I, O)."""
    n, h, wd, i = x.shape
    ho, wo = (h - k) // stride + 1, (wd - k) // stride + 1
    cols = [lax.slice(x, (0, a, b, 0), (n, a + stride * (ho - 1) + 1, b + stride * (wo - 1) + 1, i),
                      (1, stride, stride, 1)) for a in range(k) for b in range(k)]        # k*k x [N,Ho,Wo,I]
    return jnp.concatenate(cols, axis=-1).reshape(n * ho * wo, k * k * i)


def conv_im2col(x: Array, w: Array, stride: int) -> Array:
    """VALID correlation with a square stride as one matmul over gathered taps. x [N,H,W,I], w [k,k,I,O].

    XLA:CPU runs strided convs (the discriminator's downsampling convs) and their weight gradients far below
    its matmul rate; here both are single large matmuls. Costs a [N*Ho*Wo, k*k*I] patch buffer.
    """
    n, h, wd, _ = x.shape
    k, o = w.shape[0], w.shape[-1]
    ho, wo = (h - k) // stride + 1, (wd - k) // stride + 1
    return matmul(_patches(x, k, stride), w.reshape(-1, o)).reshape(n, ho, wo, o)


@jax.custom_vjp
def conv3x3_s2(x: Array, w: Array) -> Array:
    """VALID 3x3 stride-2 correlation (conv_im2col) whose input gradient is the polyphase transposed conv.

    Autodiff would scatter the nine strided taps back with interior-padded pads, slow on CPU; the transposed
    conv of dy with the channel-swapped kernel is the same sum as four dense matmuls. x [N,H,W,I] -> [N,Ho,Wo,O].
    A custom VJP: no forward-mode autodiff (conv_impl='xla' has it).
    """
    return conv_im2col(x, w, 2)


def _conv3x3_s2_fwd(x: Array, w: Array) -> tuple[Array, tuple[Array, Array]]:
    return conv_im2col(x, w, 2), (x, w)


def _conv3x3_s2_bwd(res: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
    x, w = res                                                        # dy [N,Ho,Wo,O]
    h, wd = x.shape[1:3]
    dy = lax.optimization_barrier(dy)
    # dx[2p+a] += dy[p] w[a]^T: a stride-2 transposed conv (2Ho+2 long, covering H = 2Ho+1 or 2Ho+2).
    dx = conv_transpose_polyphase(dy, w.transpose(0, 1, 3, 2))[:, :h, :wd]
    dw = (_patches(_tied(x, dy), 3, 2).T @ dy.reshape(-1, dy.shape[-1])).reshape(w.shape)   # see _tied
    return dx, dw


conv3x3_s2.defvjp(_conv3x3_s2_fwd, _conv3x3_s2_bwd)


def conv1x1(x: Array, w: Array) -> Array:
    """1x1 conv as a matmul over channels (on every backend the same op; on CPU far faster in the backward)."""
    n, h, wd, i = x.shape
    return matmul(x.reshape(n * h * wd, i), w[0, 0]).reshape(n, h, wd, -1)


# 'auto' runs up/down convs as matmuls only when wide (in * out channels at least this): there they beat XLA:CPU's
# conv, while narrow ones are cheap either way and XLA's own conv compiles ~4x faster (mostly the gradients).
def _check_impl(impl: str) -> None:
    if impl not in ("auto", "xla", "winograd"):
        raise ValueError(f"conv_impl must be 'auto', 'xla' or 'winograd'; got {impl!r}")


MATMUL_DOWN_MIN_WIDTH = 128 * 128


def _use_matmul_conv(w: Array, impl: str, up: bool) -> bool:
    """Whether an up/down 3x3 conv runs as matmuls (polyphase / im2col) rather than XLA's conv, on CPU: every
    up-conv, and down-convs of in * out >= 128^2. XLA:CPU's forward of a narrow up-conv is up to 1.3x faster, but
    the weight gradient of its lhs-dilated conv takes a generic path 12-15x slower than the polyphase form's
    (16x16x64 -> 32 ch: 79 vs 5 ms; 128x128x128 -> 64 ch: 13.7 vs 1.1 s). Narrow stride-2 convs are as fast in
    XLA for dw and faster for dx (R1, the G loss through D)."""
    _check_impl(impl)
    if impl != "auto":
        return impl == "winograd"
    wide = up or w.shape[2] * w.shape[3] >= MATMUL_DOWN_MIN_WIDTH
    return wide and jax.default_backend() == "cpu"


def _use_winograd(x: Array, w: Array, impl: str) -> bool:
    """conv_impl='winograd' only: under 'auto', conv3x3 chooses Winograd or XLA's conv for each pass itself."""
    _check_impl(impl)
    fits = w.shape[:2] == (3, 3) and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0         # F(2x2) at least
    return impl == "winograd" and fits


def _use_conv3x3(w: Array, impl: str) -> bool:
    """3x3 stride-1 convs under 'auto' on CPU go through `conv3x3` (the fastest form of each pass)."""
    return impl == "auto" and w.shape[:2] == (3, 3) and jax.default_backend() == "cpu"


def conv2d(x: Array, w: Array, *, up: int = 1, down: int = 1, f: Sequence[float] = FIR_1331,
           impl: str = "auto", w_dx: Array | None = None) -> Array:
    """Plain (shared-kernel) conv with NV `conv2d_resample` semantics. x [N,H,W,I], w [k,k,I,O].

    up=2: transposed conv (stride 2, kernel used un-flipped as stored, like torch conv_transpose2d), then FIR
    with pad 1 and gain 4. down=2: FIR blur then a stride-2 conv. Otherwise a 'same' correlation. `impl`:
    'auto' on CPU runs up-convs and wide down-convs as matmuls (polyphase up-conv, im2col stride-2 conv) and every 3x3
    stride-1 conv through `conv3x3`; 'winograd' forces the matmul forms everywhere (Winograd 3x3 included);
    'xla' (and 'auto' off CPU) is XLA's conv. 1x1 convs are always matmuls. `w_dx`: a fixed 3x3 kernel's
    `dx_kernel`, formed once (see `conv3x3`); forms other than conv3x3 leave dx to autodiff and ignore it.
    """
    k = w.shape[0]
    if w_dx is not None and (up, down, k) != (1, 1, 3):
        raise ValueError(f"conv2d: w_dx is for 3x3 stride-1 convs; got a {k}x{k} kernel, up={up}, down={down}")
    if up == 2 and down == 1 and k == 3 and len(f) == 4 and _use_matmul_conv(w, impl, up=True):
        # Same as below; the zero last row/column of the polyphase result stands in for the FIR's right pad.
        return upfirdn2d(conv_transpose_polyphase(x, w), f, pad=(1, 0, 1, 0), gain=4.0)
    if up == 2 and down == 1:
        # torch conv_transpose2d(x, W, stride=2) == lhs-dilated correlation with the spatially flipped kernel.
        y = lax.conv_general_dilated(x, w[::-1, ::-1], (1, 1), ((k - 1, k - 1), (k - 1, k - 1)),
                                     lhs_dilation=(2, 2), dimension_numbers=_DN)  # [N,2H+k-2,2W+k-2,O]
        p = k // 2 - k + 1 + (len(f) + 1) // 2  # NV conv2d_resample with padding k//2: 1 for 3x3, 2 for 1x1
        return upfirdn2d(y, f, pad=(p, p, p, p), gain=4.0)
    if down == 2 and up == 1:
        if k == 1:  # NV fast path: downsample first, then the 1x1 conv
            return conv1x1(upfirdn2d(x, f, down=2, pad=(1, 1, 1, 1)), w)
        p0 = k // 2 + (len(f) - 2 + 1) // 2
        p1 = k // 2 + (len(f) - 2) // 2
        x = upfirdn2d(x, f, pad=(p0, p1, p0, p1))
        if k == 3 and _use_matmul_conv(w, impl, up=False):
            return conv3x3_s2(x, w)
        return lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=_DN)
    if up != 1 or down != 1:
        raise ValueError(f"conv2d supports up=2 or down=2 (not both); got up={up}, down={down}")
    if k == 1:
        return conv1x1(x, w)
    if _use_winograd(x, w, impl):
        return conv3x3_winograd(x, w)
    if _use_conv3x3(w, impl):
        return conv3x3(x, w, w_dx)
    return _conv_same(x, w)


def modulated_conv2d(x: Array, w: Array, styles: Array, *, demodulate: bool = True, up: int = 1,
                     fused: bool = False, impl: str = "auto", eps: float = 1e-8) -> Array:
    """StyleGAN2 modulated convolution. x [N,H,W,I], w [k,k,I,O] (gain already applied), styles [N,I].

    Non-fused (default; ~10x faster than grouped conv on CPU): scale activations by the styles, run one
    shared-kernel conv, scale outputs by the demodulation coefficients. Fused: per-sample kernels and a
    grouped conv (feature_group_count=N), as NV does at inference; kept for parity tests and accelerators.
    Both are algebraically identical.
    """
    n, i = styles.shape
    kk, _, wi, o = w.shape
    if wi != i or x.shape[-1] != i:
        raise ValueError(f"modulated_conv2d: weight has {wi} input channels, styles {i}, x {x.shape[-1]}")
    dcoefs = None
    if demodulate:
        # sum_{kh,kw,i} (w * s_i)^2 == s^2 @ sum_{kh,kw} w^2
        dcoefs = lax.rsqrt(jnp.square(styles) @ jnp.sum(jnp.square(w), axis=(0, 1)) + eps)  # [N,O]
    if not fused:
        x = x * styles[:, None, None, :].astype(x.dtype)
        x = conv2d(x, w.astype(x.dtype), up=up, impl=impl)
        if dcoefs is not None:
            x = x * dcoefs[:, None, None, :].astype(x.dtype)
        return x
    wn = w[None] * styles[:, None, None, :, None]                    # [N,k,k,I,O]
    if dcoefs is not None:
        wn = wn * dcoefs[:, None, None, None, :]
    _, h, wd, _ = x.shape
    xg = x.transpose(1, 2, 0, 3).reshape(1, h, wd, n * i)             # [1,H,W,N*I]
    wg = wn.transpose(1, 2, 3, 0, 4).reshape(kk, kk, i, n * o)        # group g owns out channels g*O..
    if up == 2:
        y = lax.conv_general_dilated(xg, wg[::-1, ::-1], (1, 1), ((kk - 1, kk - 1),) * 2, lhs_dilation=(2, 2),
                                     dimension_numbers=_DN, feature_group_count=n)
        y = upfirdn2d(y, pad=(1, 1, 1, 1), gain=4.0)
    else:
        y = lax.conv_general_dilated(xg, wg, (1, 1), [(kk // 2, (kk - 1) // 2)] * 2, dimension_numbers=_DN,
                                     feature_group_count=n)
    ho, wo = y.shape[1:3]
    return y.reshape(ho, wo, n, o).transpose(2, 0, 1, 3)


# ----------------------------------------------------------------------------------------------------------------
# Pooling


def _windows2x2(x: Array) -> Array:
    """[N,H,W,C] -> [N,H/2,2,W/2,2,C] (floor mode: an odd last row/column is dropped, as torch and Caffe-VGG)."""
    n, h, w, c = x.shape
    return x[:, :h - h % 2, :w - w % 2].reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool2x2(x: Array) -> Array:
    """2x2 stride-2 max pool (VALID, floor mode). x [N,H,W,C] -> [N,H//2,W//2,C].

    A reduce over reshaped windows with a custom backward: the gradient goes to the first maximum of each window
    in row-major order, as torch's max_pool2d. XLA:CPU differentiates lax.reduce_window's max through a variadic
    reduce-window that carries four int32 index maps of the input's size (memory) and runs ~2x slower.
    """
    return jnp.max(_windows2x2(x), axis=(2, 4))


def _max_pool2x2_fwd(x: Array) -> tuple[Array, tuple[Array, Array]]:
    y = max_pool2x2(x)
    return y, (x, y)


def _max_pool2x2_bwd(res: tuple[Array, Array], dy: Array) -> tuple[Array]:
    x, y = res
    win = _windows2x2(x)                                                     # [N,h,2,w,2,C]
    hit = [win[:, :, a, :, b] == y for a in (0, 1) for b in (0, 1)]           # row-major window order
    first, seen = [], jnp.zeros_like(hit[0])
    for h in hit:                                                            # first maximum only (ties)
        first.append(h & ~seen)
        seen = seen | h
    g = [jnp.where(f, dy, 0).astype(dy.dtype) for f in first]
    rows = [jnp.stack(g[2 * a:2 * a + 2], axis=3) for a in (0, 1)]           # [N,h,w,2,C] per window row
    n, h, w, c = y.shape
    dx = jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, c)                 # [N,h,2,w,2,C] -> [N,2h,2w,C]
    pad = ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0))
    return (jnp.pad(dx, pad),)


max_pool2x2.defvjp(_max_pool2x2_fwd, _max_pool2x2_bwd)


def avg_pool2x2(x: Array) -> Array:
    """2x2 stride-2 average pool (VALID, floor mode) as a mean over reshaped windows: its gradient is a broadcast,
    where lax.reduce_window's is a padded reduce-window. x [N,H,W,C] -> [N,H//2,W//2,C]."""
    return jnp.mean(_windows2x2(x), axis=(2, 4))


# ----------------------------------------------------------------------------------------------------------------
# Statistics


def minibatch_std(x: Array, group_size: int = 4, num_channels: int = 1) -> Array:
    """Append the minibatch standard deviation as extra channel(s). x [N,H,W,C] -> [N,H,W,C+F].

    Groups are strided like the reference (`reshape(G, N/G, ...)`): sample i is grouped with i +- N/G.
    """
    n, h, w, c = x.shape
    g = min(group_size, n)
    if n % g:
        raise ValueError(f"minibatch_std: batch {n} is not divisible by the group size {g}")
    f = num_channels
    y = x.reshape(g, n // g, h, w, f, c // f).astype(jnp.float32)    # [G,M,H,W,F,c]
    y = y - jnp.mean(y, axis=0, keepdims=True)
    y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)             # [M,H,W,F,c]
    y = jnp.mean(y, axis=(1, 2, 4))                                  # [M,F]
    y = jnp.tile(y, (g, 1))                                          # [N,F]; row n = group n % M
    y = jnp.broadcast_to(y[:, None, None, :], (n, h, w, f)).astype(x.dtype)
    return jnp.concatenate([x, y], axis=-1)


def group_feature_std(x: Array, eps: float = 1e-8) -> Array:
    """Per-feature standard deviation inside each group: x [G,g,...,F] -> [G,...,F], sqrt(biased var over g + eps)
    (GANsNRoses' diversity head and FCMinibatchStd). The group axis is explicit, so a group's statistic never
    mixes in other groups, however the batch is laid out over devices."""
    return jnp.sqrt(jnp.var(x.astype(jnp.float32), axis=1) + eps)


def inject_noise(x: Array, strength: Array, noise_mode: NoiseMode, const: Array | None = None,
                 key: Array | None = None) -> Array:
    """x + strength * noise with noise [N,H,W,1] broadcast over channels (added before bias and activation).

    'random': fresh N(0,1) from `key`; 'const': the layer's fixed `const` [H,W] buffer; 'none': no noise.
    """
    if noise_mode == "none":
        return x
    n, h, w, _ = x.shape
    if noise_mode == "random":
        if key is None:
            raise ValueError("noise_mode='random' needs a key: apply(..., rngs={'noise': key})")
        noise = jax.random.normal(key, (n, h, w, 1), x.dtype)
    elif noise_mode == "const":
        noise = jnp.broadcast_to(const[None, :, :, None], (n, h, w, 1)).astype(x.dtype)
    else:
        raise ValueError(f"noise_mode must be 'random', 'const' or 'none'; got {noise_mode!r}")
    return x + noise * strength.astype(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Modules (parameter owners)


def _normal(scale: float) -> Callable:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype) * scale
    return init


class Dense(nn.Module):
    """Equalized-learning-rate fully connected layer. kernel [in, out] (stored N(0,1)/lr_mul), bias [out]."""
    features: int                     # output features
    lr_mul: float = 1.0               # learning-rate multiplier (0.01 in the mapping network)
    bias_init: float = 0.0            # stored bias value at init (1 for the style affines)
    use_bias: bool = True
    act: str = "linear"               # 'linear' or 'lrelu'

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", _normal(1.0 / self.lr_mul), (fan_in, self.features))
        x = x @ (kernel * (self.lr_mul / np.sqrt(fan_in))).astype(x.dtype)
        b = None
        if self.use_bias:
            b = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,)) * self.lr_mul
        return bias_act(x, b, self.act)


class Conv2d(nn.Module):
    """Equalized-learning-rate conv with optional FIR down/up-sampling. weight [k,k,I,O], bias [O]."""
    features: int                     # output channels
    kernel: int = 3                   # kernel size (square)
    use_bias: bool = True
    act: str = "linear"
    down: int = 1                     # 2: blur + stride-2 conv (discriminator)
    up: int = 1                       # 2: transposed conv + blur
    gain: float = 1.0                 # extra output gain (sqrt(0.5) on the discriminator's residual branches)
    clamp: float | None = None        # clamp after activation (NV conv_clamp)
    conv_impl: str = "auto"           # 'auto' | 'xla' | 'winograd' (see conv2d)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1] * self.kernel ** 2
        w = self.param("weight", _normal(1.0), (self.kernel, self.kernel, x.shape[-1], self.features))
        x = conv2d(x, (w / np.sqrt(fan_in)).astype(x.dtype), up=self.up, down=self.down, impl=self.conv_impl)
        b = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
        act_gain = (SQRT2 if self.act == "lrelu" else 1.0) * self.gain
        clamp = None if self.clamp is None else self.clamp * self.gain
        return bias_act(x, b, self.act, gain=act_gain, clamp=clamp)


def d_res_body(x: Array, tmp: int, out: int, *, down: bool = True, clamp: float | None = None,
               conv_impl: str = "auto") -> Array:
    """The residual discriminator block (NV DiscriminatorBlock 'resnet'; rosinality / GANsNRoses ResBlock), made
    inside the calling module's compact method, so its layers are that module's children: conv0 3x3 -> tmp,
    conv1 3x3 -> out (stride 2 after the FIR blur when `down`), skip 1x1 without bias (also down), or the identity
    when the block neither downsamples nor changes width; returns (branch + skip) * sqrt(0.5). [N,H,W,I] ->
    [N,H/2,W/2,out] (or [N,H,W,out])."""
    g, d = math.sqrt(0.5), 2 if down else 1
    kw = dict(clamp=clamp, conv_impl=conv_impl)
    if down or x.shape[-1] != out:
        y = Conv2d(out, kernel=1, use_bias=False, down=d, gain=g, name="skip")(x)
    else:
        y = x * g
    x = Conv2d(tmp, kernel=3, act="lrelu", name="conv0", **kw)(x)
    x = Conv2d(out, kernel=3, act="lrelu", down=d, gain=g, name="conv1", **kw)(x)
    return x + y


class SynthesisLayer(nn.Module):
    """affine(w) -> modulated conv (+demod, optional x2 up) -> noise -> bias -> lrelu*sqrt(2) (-> clamp).

    Params: weight [k,k,I,O], bias [O], noise_strength [], affine {kernel [w_dim,I], bias [I] (init 1)};
    buffer: noise_const [R,R] (collection 'buffers').
    """
    features: int                     # output channels
    resolution: int                   # output resolution (size of the noise map)
    kernel: int = 3
    up: int = 1                       # 2 for a block's first conv (conv0)
    use_noise: bool = True
    fused: bool = False               # grouped-conv modulated conv (slow on CPU)
    clamp: float | None = None        # NV conv_clamp (256 for ADA-pytorch trained models)
    conv_impl: str = "auto"           # 'auto' | 'xla' | 'winograd' (see conv2d)

    @nn.compact
    def __call__(self, x: Array, w: Array, noise_mode: NoiseMode = "random") -> Array:
        in_ch = x.shape[-1]
        styles = Dense(in_ch, bias_init=1.0, name="affine")(w)                            # [N,I]
        weight = self.param("weight", _normal(1.0), (self.kernel, self.kernel, in_ch, self.features))
        gain = 1.0 / np.sqrt(in_ch * self.kernel ** 2)
        x = modulated_conv2d(x, weight * gain, styles, demodulate=True, up=self.up, fused=self.fused,
                             impl=self.conv_impl)
        if self.use_noise:
            r = self.resolution
            strength = self.param("noise_strength", nn.initializers.zeros, ())
            const = self.variable("buffers", "noise_const",
                                  lambda: jax.random.normal(self.make_rng("params"), (r, r), jnp.float32))
            key = self.make_rng("noise") if noise_mode == "random" else None
            x = inject_noise(x, strength, noise_mode, const.value, key)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return bias_act(x, bias, "lrelu", clamp=self.clamp)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, + bias, linear. weight [1,1,I,C], bias [C], affine."""
    channels: int = 3
    fused: bool = False
    clamp: float | None = None

    @nn.compact
    def __call__(self, x: Array, w: Array) -> Array:
        in_ch = x.shape[-1]
        styles = Dense(in_ch, bias_init=1.0, name="affine")(w) * (1.0 / np.sqrt(in_ch))
        weight = self.param("weight", _normal(1.0), (1, 1, in_ch, self.channels))
        x = modulated_conv2d(x, weight, styles, demodulate=False, fused=self.fused)
        bias = self.param("bias", nn.initializers.zeros, (self.channels,))
        return bias_act(x, bias, "linear", clamp=self.clamp)


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers of the model families

# An init program is a few hundred threefry draws (flax folds the key in per parameter) whose optimisation costs XLA
# most of its compile time (29 s -> 10 s for the tiny SPADE G on this CPU) and buys nothing: it runs once.
INIT_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def init_jit(fn: Callable) -> Callable:
    """jit(fn) for a concrete key; inside another trace (jax.eval_shape of init_model) a plain nested jit, since
    compiler options belong to top-level programs only."""
    fast, nested = jax.jit(fn, compiler_options=INIT_COMPILE_OPTIONS), jax.jit(fn)
    return lambda key: nested(key) if isinstance(key, jax.core.Tracer) else fast(key)


def to_float(x: np.ndarray | Array) -> Array:
    """uint8 images [N,H,W,C] -> float32 in [-1, 1] (x / 127.5 - 1, as the input pipeline); floats pass through."""
    x = jnp.asarray(x)
    return x.astype(jnp.float32) / 127.5 - 1.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
