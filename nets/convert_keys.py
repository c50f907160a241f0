"""Key tables between PyTorch StyleGAN2 state dicts and our resolution-keyed Flax tree.

This is the ONE place in gafu that knows other projects' names: rosinality/stylegan2-pytorch ("ROS": index-based
`style.{i}`, `convs.{i}`, `to_rgbs.{j}`, `noises.noise_{i}`, D `convs.{i}.conv1.0`) and NVlabs
stylegan2-ada-pytorch ("NV": `mapping.fc{i}`, `synthesis.b{R}.conv0`, D `b{R}.conv1`, `b4.fc`). Nothing else in the
project parses them. Layout facts: rosinality's model.py (Generator, Discriminator) and NVlabs'
training/networks.py (SynthesisBlock, DiscriminatorBlock, DiscriminatorEpilogue).

A table is a list of `Leaf(src, dst, layout)`: `src` is the flat source key (nested keys joined by '/', e.g.
`g_ema/convs.3.conv.weight`), `dst` our key path (`("G", "params", "synthesis", "b16", "conv1", "weight")`), and
`layout` names the array transform between the two (LAYOUTS). `fixed_buffers` lists the resampling-filter buffers
the references store; they carry no information (always the [1,3,3,1] filter), so import only checks them and
export writes them.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

Path = tuple[str, ...]

ROS, NV = "rosinality", "nvidia"
FORMATS = (ROS, NV)
# Groups (top-level keys) of each format's checkpoint, in order of preference.
G_GROUPS = {ROS: ("g_ema", "g"), NV: ("G_ema", "G")}
D_GROUPS = {ROS: ("d",), NV: ("D",)}
ROS_W_AVG = "latent_avg"            # top-level key of ROS checkpoints converted from TF (not nested in g_ema)
# A key that identifies a format's generator / discriminator state dict.
G_MARKER = {ROS: "style.1.weight", NV: "mapping.fc0.weight"}
D_MARKER = {ROS: "final_linear.1.weight", NV: "b4.out.weight"}


def _modconv_to_ours(a: np.ndarray) -> np.ndarray:
    return a[0].transpose(2, 3, 1, 0)                       # [1,O,I,k,k] -> [k,k,I,O]


def _modconv_to_src(a: np.ndarray) -> np.ndarray:
    return a.transpose(3, 2, 0, 1)[None]                    # [k,k,I,O] -> [1,O,I,k,k]


# name -> (source layout -> ours, ours -> source layout). All are pure transposes/reshapes (no flips: NV and ROS
# both store the up-conv kernel as used by conv_transpose2d, and nets.layers.conv2d takes it that way).
LAYOUTS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "same": (lambda a: a, lambda a: a),
    "dense": (lambda a: a.T, lambda a: a.T),                                   # torch [out,in] <-> [in,out]
    "conv": (lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1)),   # OIHW <-> HWIO
    "modconv": (_modconv_to_ours, _modconv_to_src),                            # ROS [1,O,I,k,k] <-> HWIO
    "const_nv": (lambda a: a.transpose(1, 2, 0), lambda a: a.transpose(2, 0, 1)),     # [C,4,4] <-> [4,4,C]
    "const_ros": (lambda a: a[0].transpose(1, 2, 0), lambda a: a.transpose(2, 0, 1)[None]),  # [1,C,4,4]
    "noise_ros": (lambda a: a[0, 0], lambda a: a[None, None]),                 # [1,1,R,R] <-> [R,R]
    "vec1": (lambda a: a.reshape(()), lambda a: a.reshape(1)),                 # ROS noise weight [1] <-> []
    "rgb_bias_ros": (lambda a: a.reshape(-1), lambda a: a.reshape(1, -1, 1, 1)),    # [1,C,1,1] <-> [C]
}


@dataclasses.dataclass(frozen=True)
class Leaf:
    src: str          # flat source key, groups joined by '/'
    dst: Path         # our key path, from the model-file root ("G"/"D", collection, ...)
    layout: str       # key of LAYOUTS

    def to_ours(self, a: np.ndarray) -> np.ndarray:
        return LAYOUTS[self.layout][0](a)

    def to_src(self, a: np.ndarray) -> np.ndarray:
        return LAYOUTS[self.layout][1](a)

    def src_shape(self, our_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The source-layout shape that corresponds to our shape (computed on an unallocated array)."""
        return tuple(self.to_src(np.empty(our_shape, np.float32)).shape)


def join_key(group: str, key: str) -> str:
    return f"{group}/{key}" if group else key


def fir_kernel(gain: float = 1.0) -> np.ndarray:
    """The 2-D [1,3,3,1] resampling filter as the references store it: outer / 64 * gain. [4,4]."""
    f = np.array([1.0, 3.0, 3.0, 1.0], np.float32)
    return (np.outer(f, f) / 64.0 * gain).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Generator


def _block_res(resolution: int) -> list[int]:
    return [2 ** k for k in range(2, int(np.log2(resolution)) + 1)]


def _ros_styled(prefix: str, dst: Path, noise: bool = True) -> list[tuple[str, Path, str]]:
    """ROS StyledConv / ToRGB leaves relative to `prefix` (the module's key) -> our layer `dst`."""
    rows = [(f"{prefix}.conv.weight", dst + ("weight",), "modconv"),
            (f"{prefix}.conv.modulation.weight", dst + ("affine", "kernel"), "dense"),
            (f"{prefix}.conv.modulation.bias", dst + ("affine", "bias"), "same")]
    if noise:    # a synthesis layer (StyledConv)
        rows += [(f"{prefix}.noise.weight", dst + ("noise_strength",), "vec1"),
                 (f"{prefix}.activate.bias", dst + ("bias",), "same")]
    else:        # ToRGB: its bias is a [1,3,1,1] parameter of the module itself
        rows += [(f"{prefix}.bias", dst + ("bias",), "rgb_bias_ros")]
    return rows


def ros_generator(resolution: int, mapping_layers: int, group: str = "g_ema") -> tuple[list[Leaf], dict]:
    """Leaves and fixed buffers of a ROS `Generator(size=resolution, n_mlp=mapping_layers)` state dict."""
    P, B = ("G", "params"), ("G", "buffers")
    rows: list[tuple[str, Path, str]] = []
    for i in range(mapping_layers):                       # style.0 is PixelNorm, so fc i is style.{i+1}
        rows += [(f"style.{i + 1}.weight", P + ("mapping", f"fc{i}", "kernel"), "dense"),
                 (f"style.{i + 1}.bias", P + ("mapping", f"fc{i}", "bias"), "same")]
    syn, bsyn = P + ("synthesis",), B + ("synthesis",)
    rows += [("input.input", syn + ("b4", "const"), "const_ros")]
    rows += _ros_styled("conv1", syn + ("b4", "conv1"))
    rows += _ros_styled("to_rgb1", syn + ("b4", "torgb"), noise=False)
    rows += [("noises.noise_0", bsyn + ("b4", "conv1", "noise_const"), "noise_ros")]
    fixed = {}
    # Block j (resolution 2^(j+3)) owns convs.{2j} (up-conv), convs.{2j+1}, to_rgbs.{j}, noises 2j+1 and 2j+2.
    for j, res in enumerate(_block_res(resolution)[1:]):
        b = f"b{res}"
        rows += _ros_styled(f"convs.{2 * j}", syn + (b, "conv0"))
        rows += _ros_styled(f"convs.{2 * j + 1}", syn + (b, "conv1"))
        rows += _ros_styled(f"to_rgbs.{j}", syn + (b, "torgb"), noise=False)
        rows += [(f"noises.noise_{2 * j + 1}", bsyn + (b, "conv0", "noise_const"), "noise_ros"),
                 (f"noises.noise_{2 * j + 2}", bsyn + (b, "conv1", "noise_const"), "noise_ros")]
        fixed[join_key(group, f"convs.{2 * j}.conv.blur.kernel")] = fir_kernel(4.0)
        fixed[join_key(group, f"to_rgbs.{j}.upsample.kernel")] = fir_kernel(4.0)
    leaves = [Leaf(join_key(group, s), d, lay) for s, d, lay in rows]
    leaves.append(Leaf(ROS_W_AVG, B + ("mapping", "w_avg"), "same"))   # top level in ROS files
    return leaves, fixed


def _nv_layer(prefix: str, dst: Path, bdst: Path, noise: bool = True) -> list[tuple[str, Path, str]]:
    rows = [(f"{prefix}.weight", dst + ("weight",), "conv"),
            (f"{prefix}.bias", dst + ("bias",), "same"),
            (f"{prefix}.affine.weight", dst + ("affine", "kernel"), "dense"),
            (f"{prefix}.affine.bias", dst + ("affine", "bias"), "same")]
    if noise:
        rows += [(f"{prefix}.noise_strength", dst + ("noise_strength",), "same"),
                 (f"{prefix}.noise_const", bdst + ("noise_const",), "same")]
    return rows


def nv_generator(resolution: int, mapping_layers: int, group: str = "G_ema") -> tuple[list[Leaf], dict]:
    """Leaves and fixed buffers of an NV `Generator` state dict (architecture 'skip', unconditional)."""
    P, B = ("G", "params"), ("G", "buffers")
    rows: list[tuple[str, Path, str]] = []
    for i in range(mapping_layers):
        rows += [(f"mapping.fc{i}.weight", P + ("mapping", f"fc{i}", "kernel"), "dense"),
                 (f"mapping.fc{i}.bias", P + ("mapping", f"fc{i}", "bias"), "same")]
    rows += [("mapping.w_avg", B + ("mapping", "w_avg"), "same")]
    fixed = {}
    for res in _block_res(resolution):
        b, pre = f"b{res}", f"synthesis.b{res}"
        syn, bsyn = P + ("synthesis", b), B + ("synthesis", b)
        fixed[join_key(group, f"{pre}.resample_filter")] = fir_kernel()
        if res == 4:
            rows += [(f"{pre}.const", syn + ("const",), "const_nv")]
            convs = ["conv1"]
        else:
            convs = ["conv0", "conv1"]
        for c in convs:
            rows += _nv_layer(f"{pre}.{c}", syn + (c,), bsyn + (c,))
            fixed[join_key(group, f"{pre}.{c}.resample_filter")] = fir_kernel()
        rows += _nv_layer(f"{pre}.torgb", syn + ("torgb",), bsyn + ("torgb",), noise=False)
    return [Leaf(join_key(group, s), d, lay) for s, d, lay in rows], fixed


# ----------------------------------------------------------------------------------------------------------------
# Discriminator (architecture 'resnet')


def ros_discriminator(resolution: int, group: str = "d") -> tuple[list[Leaf], dict]:
    """Leaves and fixed buffers of a ROS `Discriminator(size=resolution)` state dict.

    ROS `convs` is a Sequential: convs.0 = fromrgb (ConvLayer: [EqualConv2d, FusedLeakyReLU]), convs.{i} (i >= 1) =
    ResBlock at input resolution R / 2^(i-1) = our b{res}: its conv1 is our conv0, its (blur, stride-2) conv2 our
    conv1, its skip our skip.
    """
    P = ("D", "params")
    top = f"b{resolution}"
    rows = [("convs.0.0.weight", P + (top, "fromrgb", "weight"), "conv"),
            ("convs.0.1.bias", P + (top, "fromrgb", "bias"), "same")]
    fixed = {}
    for i, res in enumerate(reversed(_block_res(resolution)[1:]), start=1):
        b, pre = f"b{res}", f"convs.{i}"
        rows += [(f"{pre}.conv1.0.weight", P + (b, "conv0", "weight"), "conv"),
                 (f"{pre}.conv1.1.bias", P + (b, "conv0", "bias"), "same"),
                 (f"{pre}.conv2.1.weight", P + (b, "conv1", "weight"), "conv"),
                 (f"{pre}.conv2.2.bias", P + (b, "conv1", "bias"), "same"),
                 (f"{pre}.skip.1.weight", P + (b, "skip", "weight"), "conv")]
        fixed[join_key(group, f"{pre}.conv2.0.kernel")] = fir_kernel()
        fixed[join_key(group, f"{pre}.skip.0.kernel")] = fir_kernel()
    rows += [("final_conv.0.weight", P + ("b4", "conv", "weight"), "conv"),
             ("final_conv.1.bias", P + ("b4", "conv", "bias"), "same"),
             # Both flatten NCHW ([C,4,4] order), as our epilogue does, so the fc kernel is a plain transpose.
             ("final_linear.0.weight", P + ("b4", "fc", "kernel"), "dense"),
             ("final_linear.0.bias", P + ("b4", "fc", "bias"), "same"),
             ("final_linear.1.weight", P + ("b4", "out", "kernel"), "dense"),
             ("final_linear.1.bias", P + ("b4", "out", "bias"), "same")]
    return [Leaf(join_key(group, s), d, lay) for s, d, lay in rows], fixed


def nv_discriminator(resolution: int, group: str = "D") -> tuple[list[Leaf], dict]:
    """Leaves and fixed buffers of an NV `Discriminator` state dict (architecture 'resnet', unconditional)."""
    P = ("D", "params")
    rows: list[tuple[str, Path, str]] = []
    fixed = {}
    for res in reversed(_block_res(resolution)[1:]):
        b = f"b{res}"
        layers = (["fromrgb"] if res == resolution else []) + ["conv0", "conv1"]
        fixed[join_key(group, f"{b}.resample_filter")] = fir_kernel()
        for c in layers:
            rows += [(f"{b}.{c}.weight", P + (b, c, "weight"), "conv"),
                     (f"{b}.{c}.bias", P + (b, c, "bias"), "same")]
            fixed[join_key(group, f"{b}.{c}.resample_filter")] = fir_kernel()
        rows += [(f"{b}.skip.weight", P + (b, "skip", "weight"), "conv")]
        fixed[join_key(group, f"{b}.skip.resample_filter")] = fir_kernel()
    rows += [("b4.conv.weight", P + ("b4", "conv", "weight"), "conv"),
             ("b4.conv.bias", P + ("b4", "conv", "bias"), "same"),
             ("b4.fc.weight", P + ("b4", "fc", "kernel"), "dense"),
             ("b4.fc.bias", P + ("b4", "fc", "bias"), "same"),
             ("b4.out.weight", P + ("b4", "out", "kernel"), "dense"),
             ("b4.out.bias", P + ("b4", "out", "bias"), "same")]
    fixed[join_key(group, "b4.conv.resample_filter")] = fir_kernel()
    return [Leaf(join_key(group, s), d, lay) for s, d, lay in rows], fixed


def generator_table(fmt: str, resolution: int, mapping_layers: int, group: str) -> tuple[list[Leaf], dict]:
    return (ros_generator if fmt == ROS else nv_generator)(resolution, mapping_layers, group)


def discriminator_table(fmt: str, resolution: int, group: str) -> tuple[list[Leaf], dict]:
    return (ros_discriminator if fmt == ROS else nv_discriminator)(resolution, group)


# ----------------------------------------------------------------------------------------------------------------
# Reading the architecture off a state dict (the index-based names are parsed only here)


def count_indexed(keys, group: str, pattern: str, start: int = 0) -> int:
    """How many consecutive i >= start have `pattern.format(i)` under `group` (e.g. 'style.{}.weight')."""
    n = start
    while join_key(group, pattern.format(n)) in keys:
        n += 1
    return n - start


def generator_widths(fmt: str, flat: dict, group: str) -> dict:
    """Shape-derived facts of a generator state dict: mapping layers, z/w dims, image channels, ch(res) table.

    Raises KeyError(key) for the first key it needs and cannot find.
    """
    def get(key: str) -> np.ndarray:
        k = join_key(group, key)
        if k not in flat:
            raise KeyError(k)
        return flat[k]

    keys = flat.keys()
    if fmt == ROS:
        n_map = count_indexed(keys, group, "style.{}.weight", start=1)
        first, last = get("style.1.weight"), get(f"style.{max(n_map, 1)}.weight")
        n_blocks = count_indexed(keys, group, "to_rgbs.{}.conv.weight")
        chs = {4: get("input.input").shape[1]}
        for j in range(n_blocks):
            chs[2 ** (j + 3)] = get(f"to_rgbs.{j}.conv.weight").shape[2]          # [1,3,I,1,1]
        img_channels = get("to_rgb1.conv.weight").shape[1]
    else:
        n_map = count_indexed(keys, group, "mapping.fc{}.weight")
        first, last = get("mapping.fc0.weight"), get(f"mapping.fc{max(n_map, 1) - 1}.weight")
        chs = {}
        res = 4
        while join_key(group, f"synthesis.b{res}.torgb.weight") in keys:
            chs[res] = flat[join_key(group, f"synthesis.b{res}.torgb.weight")].shape[1]   # [3,I,1,1]
            res *= 2
        img_channels = get("synthesis.b4.torgb.weight").shape[0]
    return dict(mapping_layers=n_map, z_dim=int(first.shape[1]), w_dim=int(last.shape[0]),
                img_channels=int(img_channels), channels={r: int(c) for r, c in chs.items()})
