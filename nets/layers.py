"""The shared layer library: StyleGAN2's building blocks (Karras et al. 2020), in NHWC / HWIO.

Reused by SPADE and GANs N' Roses. The math lives in free functions; the modules only own parameters.
Reference: NVlabs/stylegan2-ada-pytorch `training/networks.py`, `torch_utils/ops/{upfirdn2d,conv2d_resample}.py`
(paddings and gains below follow those files exactly, see ../shared/docs/stylegan2.md §a).

Equalized learning rate: every weight is stored as N(0, 1) / lr_mul and used as weight * lr_mul / sqrt(fan_in);
biases are stored raw and used as bias * lr_mul.
"""
from __future__ import annotations

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


# Winograd F(2x2, 3x3) transforms (Lavin & Gray 2016): 16 multiplies per 2x2 output tile instead of 36.
_WINO_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], np.float32)


def _wino_bt(d0: Array, d1: Array, d2: Array, d3: Array) -> tuple[Array, ...]:
    """B^T d along one axis: four input rows (or columns) of a 4-wide tile -> four transformed ones."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


def _wino_at(m0: Array, m1: Array, m2: Array, m3: Array) -> tuple[Array, Array]:
    """A^T m along one axis: four transformed rows -> the tile's two output rows."""
    return m0 + m1 + m2, m1 - m2 - m3


def conv3x3_winograd(x: Array, w: Array) -> Array:
    """'Same' 3x3 stride-1 correlation as 16 batched matmuls. x [N,H,W,I] (H, W even), w [3,3,I,O].

    Equal to lax.conv up to float rounding. On CPU it beats XLA's conv: 2.25x fewer multiplies, all in
    matmuls, and its gradients are matmuls too (XLA:CPU's conv weight-gradient runs at ~1/4 of its forward rate).
    """
    n, h, wd, i = x.shape
    o = w.shape[-1]
    th, tw = h // 2, wd // 2
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))                                    # [N,H+2,W+2,I]
    rows = _wino_bt(*(lax.slice_in_dim(xp, k, k + 2 * th - 1, stride=2, axis=1) for k in range(4)))
    u = [c for r in rows for c in _wino_bt(*(lax.slice_in_dim(r, k, k + 2 * tw - 1, stride=2, axis=2)
                                               for k in range(4)))]                    # 16 x [N,th,tw,I]
    u = jnp.stack(u).reshape(16, n * th * tw, i)
    g = jnp.asarray(_WINO_G, w.dtype)
    v = jnp.einsum("ai,ijco,bj->abco", g, w, g).reshape(16, i, o)                       # G w G^T
    m = jnp.einsum("kpi,kio->kpo", u, v).reshape(4, 4, n, th, tw, o)
    r0, r1 = _wino_at(m[0], m[1], m[2], m[3])                                          # [4,N,th,tw,O] each
    y = [list(_wino_at(r[0], r[1], r[2], r[3])) for r in (r0, r1)]                     # y[a][b]: output phase
    y = jnp.stack([jnp.stack(y[0], axis=3), jnp.stack(y[1], axis=3)], axis=2)         # [N,th,2,tw,2,O]
    return y.reshape(n, h, wd, o)


def conv_transpose_polyphase(x: Array, w: Array) -> Array:
    """torch conv_transpose2d(x, W, stride=2) for a 3x3 kernel, as 4 per-phase matmuls; zero-padded to 2H+2.

    x [N,H,W,I], w [3,3,I,O] -> [N,2H+2,2W+2,O] whose last row and column are zero (the transposed conv is
    2H+1 long). Output row 2m takes W[0] x[m] + W[2] x[m-1] and row 2m+1 takes W[1] x[m]: 9 taps in all, with
    no multiplies by the zeros a dilated conv inserts.
    """
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
            row.append((patches @ k).reshape(n, h + 1, wd + 1, o))
        phases.append(jnp.stack(row, axis=3))                            # [N,H+1,W+1,2,O]
    y = jnp.stack(phases, axis=2)                                        # [N,H+1,2,W+1,2,O]
    return y.reshape(n, 2 * h + 2, 2 * wd + 2, o)


# 'auto' uses the matmul forms only for wide convs (in * out channels at least this): there they beat XLA:CPU's
# conv, while narrow convs are cheap either way and XLA's own conv compiles ~4x faster (mostly the gradients).
MATMUL_CONV_MIN_WIDTH = 128 * 128


def _use_matmul_conv(w: Array, impl: str) -> bool:
    """Whether a conv runs as matmuls (Winograd / polyphase) rather than XLA's conv: wide convs on CPU."""
    if impl not in ("auto", "xla", "winograd"):
        raise ValueError(f"conv_impl must be 'auto', 'xla' or 'winograd'; got {impl!r}")
    wide = w.shape[2] * w.shape[3] >= MATMUL_CONV_MIN_WIDTH
    return impl == "winograd" or (impl == "auto" and wide and jax.default_backend() == "cpu")


def _use_winograd(x: Array, w: Array, impl: str) -> bool:
    fits = w.shape[:2] == (3, 3) and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0
    return _use_matmul_conv(w, impl) and fits


def conv2d(x: Array, w: Array, *, up: int = 1, down: int = 1, f: Sequence[float] = FIR_1331,
           impl: str = "auto") -> Array:
    """Plain (shared-kernel) conv with NV `conv2d_resample` semantics. x [N,H,W,I], w [k,k,I,O].

    up=2: transposed conv (stride 2, kernel used un-flipped as stored, like torch conv_transpose2d), then FIR
    with pad 1 and gain 4. down=2: FIR blur then a stride-2 conv. Otherwise a 'same' correlation, computed by
    Winograd matmuls when `impl` is 'winograd' (or 'auto' on CPU) and the shapes allow it.
    """
    k = w.shape[0]
    if up == 2 and down == 1 and k == 3 and len(f) == 4 and _use_matmul_conv(w, impl):
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
            x = upfirdn2d(x, f, down=2, pad=(1, 1, 1, 1))
            return lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=_DN)
        p0 = k // 2 + (len(f) - 2 + 1) // 2
        p1 = k // 2 + (len(f) - 2) // 2
        x = upfirdn2d(x, f, pad=(p0, p1, p0, p1))
        return lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=_DN)
    if up != 1 or down != 1:
        raise ValueError(f"conv2d supports up=2 or down=2 (not both); got up={up}, down={down}")
    if _use_winograd(x, w, impl):
        return conv3x3_winograd(x, w)
    return lax.conv_general_dilated(x, w, (1, 1), [(k // 2, (k - 1) // 2)] * 2, dimension_numbers=_DN)


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
