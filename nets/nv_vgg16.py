"""NVIDIA's metric VGG-16 (stylegan2-ada-pytorch's `vgg16.pt`) in Flax linen: the 4096-d features of
precision/recall.

NVlabs/stylegan2-ada-pytorch metrics/precision_recall.py embeds images with that TorchScript file called with
`return_features=True`. Its code is not reproduced anywhere we could read; the forward here follows the two
public reimplementations that agree on it: torch-fidelity's FeatureExtractorVGG16 (whose tests hold it within 1e-4
of vgg16.pt's features at 32..512 px) and genforce's models/perceptual_model.py (which maps vgg16.pt's keys):

    uint8-range RGB -> 224 x 224 by TensorFlow 1.x's bilinear resize (align_corners=False, no half-pixel centres:
    source = destination * in / out, the upper neighbour clamped at the border, no antialiasing)
    -> (x - 255 mean) / (255 std), ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)
    -> VGG-16's 13 3x3 convs + ReLU, 2x2 max pools after convs 2, 4, 7, 10, 13 -> [7,7,512]
    -> flattened in torch's C,H,W order -> fc1 + ReLU -> fc2 + ReLU: [4096] (dropout is off at eval).

The variables carry the TorchScript file's module names (`layers.conv1` .. `layers.conv13`, `layers.fc1`,
`layers.fc2`), so a state dict maps onto them by renaming and transposing (nets/nv_vgg16_weights.py):

    params/conv{k}/kernel [3,3,I,O] <- layers.conv{k}.weight [O,I,3,3];  bias [O] <- layers.conv{k}.bias
    params/fc{k}/kernel [I,O]       <- layers.fc{k}.weight [O,I];        bias [O] <- layers.fc{k}.bias

Images are NHWC in [-1, 1] (gafu's range; x + 1 times 127.5 gives NV's [0, 255] back). `channels` / `fc` shrink
the network for tests (the key names and the forward stay the same).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
FEATURE_DIM = 4096
INPUT_SIZE = 224
CHANNELS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))   # convs per block
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@functools.lru_cache(maxsize=16)
def tf1_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of TF 1.x resize_bilinear(align_corners=False) along one axis: output j samples the
    input at j * n_in / n_out between its floor and the next pixel (clamped to the last)."""
    src = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m.astype(np.float32)


def resize_tf1(x: Array, size: int = INPUT_SIZE) -> Array:
    """[N,H,W,C] -> [N,size,size,C] by TF 1.x bilinear (separable: two small matrix products)."""
    if x.shape[1:3] == (size, size):
        return x
    wy = jnp.asarray(tf1_resize_matrix(x.shape[1], size))                    # [size,H]
    wx = jnp.asarray(tf1_resize_matrix(x.shape[2], size))                    # [size,W]
    x = jnp.einsum("oh,nhwc->nowc", wy, x, precision=jax.lax.Precision.HIGHEST)
    return jnp.einsum("pw,nowc->nopc", wx, x, precision=jax.lax.Precision.HIGHEST)


class NVVGG16(nn.Module):
    """x [N,H,W,3] in [-1, 1] (any H, W; resized to 224) -> fc2 + ReLU features [N,fc]."""
    channels: tuple = CHANNELS
    fc: int = FEATURE_DIM

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = resize_tf1(x.astype(jnp.float32))
        mean, std = (jnp.asarray(255.0 * a).reshape(1, 1, 1, 3) for a in (MEAN, STD))
        x = ((x + 1.0) * 127.5 - mean) / std                                   # NV's normalisation of [0, 255]
        k = 0
        for block in self.channels:
            for out in block:
                k += 1
                x = nn.relu(nn.Conv(out, (3, 3), padding=((1, 1), (1, 1)), name=f"conv{k}")(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)           # [N,C*7*7], torch's flatten order
        x = nn.relu(nn.Dense(self.fc, name="fc1")(x))
        return nn.relu(nn.Dense(self.fc, name="fc2")(x))                       # [N,fc]


def variable_shapes(net: NVVGG16 | None = None) -> dict:
    """{"params": ...} as jax.ShapeDtypeStruct leaves (traced at 224 px, not run)."""
    net = net or NVVGG16()
    return jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)))


def init_variables(seed: int = 0, net: NVVGG16 | None = None) -> dict:
    """Random numpy variables (tests; real use loads a file): He-normal kernels, small random biases."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf) -> np.ndarray:
        if path[-1].key == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return (rng.standard_normal(leaf.shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
        return rng.uniform(-0.1, 0.1, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, variable_shapes(net))


def param_count(variables: dict) -> int:
    return int(sum(np.size(v) for v in jax.tree.leaves(variables["params"])))
