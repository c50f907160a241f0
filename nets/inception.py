"""The FID Inception-v3 (Szegedy et al. 2016) as pytorch-fid builds it, in Flax linen: 2048-d pool features.

This is mseitzer/pytorch-fid's `fid_inception_v3` (src/pytorch_fid/inception.py): torchvision's Inception3 with the
TF graph's quirks patched in (FIDInceptionA/C/E_1: the pooling branch averages with count_include_pad=False;
FIDInceptionE_2, the last block: max pooling there instead of average). Inputs are resized to 299 x 299
(bilinear, align_corners=False, no antialiasing, as F.interpolate) and the features are the global average pool
after Mixed_7c. Batch norm is the inference form with eps 1e-3 (torchvision's BasicConv2d).

Blocks and layers carry torchvision's names (`Mixed_5b/branch5x5_1/conv/kernel`), so a state dict maps onto the
variables by renaming alone (nets/inception_weights.py reads the files):

    params/{block}[/{branch}]/conv/kernel [kh,kw,I,O]     <- {block}[.{branch}].conv.weight [O,I,kh,kw]
    params/{block}[/{branch}]/bn/{scale, bias} [O]        <- .bn.weight, .bn.bias
    batch_stats/{block}[/{branch}]/bn/{mean, var} [O]     <- .bn.running_mean, .bn.running_var

Images are NHWC in about [-1, 1] (gafu's range; pytorch-fid maps [0, 1] to it with 2x - 1 after resizing, and the
two orders agree because both steps are linear).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPS = 1e-3

# (name, out channels, kernel (kh, kw), stride, padding (ph, pw)) of the stem, before Mixed_5b.
STEM = (("Conv2d_1a_3x3", 32, (3, 3), 2, (0, 0)), ("Conv2d_2a_3x3", 32, (3, 3), 1, (0, 0)),
        ("Conv2d_2b_3x3", 64, (3, 3), 1, (1, 1)), "maxpool",
        ("Conv2d_3b_1x1", 80, (1, 1), 1, (0, 0)), ("Conv2d_4a_3x3", 192, (3, 3), 1, (0, 0)), "maxpool")
# The mixed blocks in order: (name, kind, its one size argument: pool_features (A) or channels_7x7 (C)).
MIXED = (("Mixed_5b", "A", 32), ("Mixed_5c", "A", 64), ("Mixed_5d", "A", 64), ("Mixed_6a", "B", None),
         ("Mixed_6b", "C", 128), ("Mixed_6c", "C", 160), ("Mixed_6d", "C", 160), ("Mixed_6e", "C", 192),
         ("Mixed_7a", "D", None), ("Mixed_7b", "E_1", None), ("Mixed_7c", "E_2", None))


class BasicConv(nn.Module):
    """torchvision's BasicConv2d: conv without bias, batch norm (eps 1e-3), ReLU."""
    features: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: Array) -> Array:                                   # [N,H,W,I] -> [N,H',W',O]
        ph, pw = self.padding
        x = nn.Conv(self.features, self.kernel, (self.stride, self.stride), padding=((ph, ph), (pw, pw)),
                    use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
        return nn.relu(x)


def max_pool(x: Array, stride: int, pad: int = 0) -> Array:
    """3x3 max pool; padding counts as -inf (PyTorch's max_pool2d)."""
    return nn.max_pool(x, (3, 3), (stride, stride), padding=((pad, pad), (pad, pad)))


def avg_pool_exclude_pad(x: Array) -> Array:
    """3x3, stride 1, padding 1 average that divides by the in-image cells only (count_include_pad=False, as the
    TF graph's pooling: torchvision's own InceptionA/C/E count the zeros, which is what FIDInception* patch)."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)      # [N,H,W,C]
    ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)   # [1,H,W,1]
    return total / count


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:                  # -> 224 + pool_features channels
        b1 = BasicConv(64, name="branch1x1")(x)
        b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(BasicConv(48, name="branch5x5_1")(x))
        b3 = BasicConv(64, name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, name="branch_pool")(avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x: Array) -> Array:                  # stride 2 -> 480 + I channels
        b3 = BasicConv(384, (3, 3), stride=2, name="branch3x3")(x)
        bd = BasicConv(64, name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, max_pool(x, 2)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x: Array) -> Array:                  # -> 768 channels
        c = self.channels_7x7
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        b1 = BasicConv(192, name="branch1x1")(x)
        b7 = BasicConv(c, name="branch7x7_1")(x)
        b7 = BasicConv(c, **row, name="branch7x7_2")(b7)
        b7 = BasicConv(192, **col, name="branch7x7_3")(b7)
        bd = BasicConv(c, name="branch7x7dbl_1")(x)
        for i, (out, shape) in enumerate(((c, col), (c, row), (c, col), (192, row)), start=2):
            bd = BasicConv(out, **shape, name=f"branch7x7dbl_{i}")(bd)
        bp = BasicConv(192, name="branch_pool")(avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x: Array) -> Array:                  # stride 2 -> 512 + I channels
        b3 = BasicConv(320, (3, 3), stride=2, name="branch3x3_2")(BasicConv(192, name="branch3x3_1")(x))
        b7 = BasicConv(192, name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, max_pool(x, 2)], axis=-1)


class InceptionE(nn.Module):
    """E_1 (Mixed_7b) pools by averaging without the padding; E_2 (Mixed_7c) by max, the FID graph's quirk."""
    max_pool_branch: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:                  # -> 2048 channels
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        b1 = BasicConv(320, name="branch1x1")(x)
        b3 = BasicConv(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv(384, **row, name="branch3x3_2a")(b3),
                              BasicConv(384, **col, name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv(448, name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([BasicConv(384, **row, name="branch3x3dbl_3a")(bd),
                              BasicConv(384, **col, name="branch3x3dbl_3b")(bd)], axis=-1)
        pooled = max_pool(x, 1, pad=1) if self.max_pool_branch else avg_pool_exclude_pad(x)
        bp = BasicConv(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def _mixed(kind: str, arg: int | None, name: str) -> nn.Module:
    if kind == "A":
        return InceptionA(arg, name=name)
    if kind == "C":
        return InceptionC(arg, name=name)
    if kind == "B":
        return InceptionB(name=name)
    if kind == "D":
        return InceptionD(name=name)
    return InceptionE(max_pool_branch=kind == "E_2", name=name)


def resize_bilinear(x: Array, size: int = INPUT_SIZE) -> Array:
    """[N,H,W,C] -> [N,size,size,C], F.interpolate(mode='bilinear', align_corners=False) without antialiasing
    (half-pixel centres; at the borders only in-image pixels weigh, which equals PyTorch's clamping)."""
    if x.shape[1:3] == (size, size):
        return x
    return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear", antialias=False)


class FIDInception(nn.Module):
    """x [N,H,W,3] in [-1, 1] (any H, W; resized to 299) -> pool features [N,2048]."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = resize_bilinear(x.astype(jnp.float32))
        for layer in STEM:
            if layer == "maxpool":
                x = max_pool(x, 2)
            else:
                name, out, kernel, stride, pad = layer
                x = BasicConv(out, kernel, stride, pad, name=name)(x)
        for name, kind, arg in MIXED:
            x = _mixed(kind, arg, name)(x)
        return jnp.mean(x, axis=(1, 2))                                      # [N,2048]


def variable_shapes() -> dict:
    """{"params", "batch_stats"} as jax.ShapeDtypeStruct leaves (traced, not run: the shapes do not depend on the
    input size, and 75 px is the smallest whose maps stay non-empty)."""
    return jax.eval_shape(FIDInception().init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))


def init_variables(seed: int = 0) -> dict:
    """Random numpy variables of the right shapes (tests, benchmarks; real use loads a file): He-normal kernels,
    bn scale 1 and bias 0, running statistics mean 0 / var 1 as a fresh torch BatchNorm2d. Filled in numpy, since
    running Flax's init eagerly through 94 convolutions takes most of a minute on a small CPU."""
    rng = np.random.RandomState(seed)

    def fill(path, leaf) -> np.ndarray:
        name = path[-1].key
        if name == "kernel":                                                   # [kh,kw,I,O]
            fan_in = int(np.prod(leaf.shape[:3]))
            return (rng.randn(*leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        return np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, np.float32)

    return jax.tree_util.tree_map_with_path(fill, variable_shapes())


def param_count(variables: dict) -> int:
    """Learned parameters (conv kernels, bn scale and bias), running statistics excluded."""
    return int(sum(np.size(v) for v in jax.tree.leaves(variables["params"])))


@functools.lru_cache(maxsize=4)
def features_fn(batch: int | None = None):
    """jit((variables, x [N,H,W,3]) -> [N,2048]); one program per input shape, so callers pad the last batch."""
    del batch   # the cache key only: callers with different batch sizes get separate entries
    return jax.jit(lambda v, x: FIDInception().apply(v, x))


def embed(variables: dict, images: Sequence[np.ndarray] | np.ndarray, batch: int = 64) -> np.ndarray:
    """float32 features [N,2048] of images [N,H,W,3] (uint8, or float in [-1, 1]) in padded batches of `batch`."""
    from nets.images import from_uint8

    x = np.asarray(images)
    if x.dtype == np.uint8:
        x = from_uint8(x)
    fn = features_fn()
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        pad = batch - len(xb)                      # one shape for every batch: no recompile for the last one
        if pad:
            xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
        out.append(np.asarray(fn(variables, jnp.asarray(xb)))[:batch - pad])
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)
