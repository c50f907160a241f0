"""Import mchong6/GANsNRoses PyTorch state dicts into gafu's GANs N' Roses networks (nets/gnr.py). numpy only.

Reference: mchong6/GANsNRoses `model.py`, main branch. Its index-based names, as the modules nest there:

  Generator         mapping.{i}                     EqualLinear x n_mlp             -> mapping/fc{i}
                    encoder.stem.0                  ConvLayer(3, ch(R), 1)          -> encoder/b{R}/fromrgb
                    encoder.stem.{1..num_down}      ResBlock(down), r = R .. 2C     -> encoder/b{r}
                    encoder.stem.{num_down+1+i}     ResBlock(downsample=False)      -> encoder/b{C}/res{i}
                    encoder.content.{0,1}           ConvLayer 1x1                   -> encoder/b{C}/content{0,1}
                    encoder.style.{j}               ConvLayer 3x3 down, r = C .. 8  -> encoder/b{r}/style
                    encoder.style.{n+1, n+2}        EqualLinear (n: the Flatten)    -> encoder/b4/{fc, style_out}
                    adain_bottleneck.{i}.conv{1,2}  StyledResBlock                  -> decoder/b{C}/res{i}/conv{0,1}
                    conv1, to_rgb1                                                  -> decoder/b{C}/{conv1, torgb}
                    convs.{2j, 2j+1}, to_rgbs.{j}   r = 2C .. R                     -> decoder/b{r}/{conv0, conv1,
                                                                                       torgb}
  Discriminator     l_branch.{0, 1.., n+1}          fromrgb, ResBlocks R .. 64, 1x1 -> local/b{..}, local/b32/out
                    g_branch.{0, 1..}, g_adv        fromrgb, ResBlocks R .. 16, 1x1 -> global/b{..}, global/b8/out
                    g_std.{0, 2}, g_final           3x3 down conv, 2 EqualLinears   -> global/b8/std_conv,
                                                                                       global/b4/{std_fc, std_out}
  LatDiscriminator  fc.{0..3}, fc.4.fc, fc.5                                        -> fc{0..3}, mbstd_fc, out
  (R = 256 px in the release, C = R / 2^num_down; at C = 4 the style head is encoder/b4_out.)

A ConvLayer is an nn.Sequential [Blur (down only), EqualConv2d, FusedLeakyReLU (activated only)]: its weight sits at
index 0 or 1 and the activation's bias (our conv bias) one further; an un-activated ConvLayer keeps its bias in the
EqualConv2d, a ResBlock skip has none. ResBlock conv1 / conv2 are our conv0 / conv1. EqualLinear stores N(0,1) /
lr_mul as our Dense does, so weights only transpose. The Blur / Upsample filters are buffers (always [1,3,3,1]):
checked when present, never required. The reference D hardcodes local 32x32, global 8x8, 128 diversity features
and the latent D 256 wide, and the Generator style_dim 512: other gafu configs have no reference state dict.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from nets import convert_keys as K
from nets.convert_io import ConvertError, read_checkpoint

if TYPE_CHECKING:                 # nets.gnr imports jax; the importer itself needs numpy only
    from nets.gnr import GNRConfig

Path = tuple[str, ...]
Shape = tuple[int, ...]
KINDS = ("generator", "discriminator", "latent")
# train.py's ck.pt groups for each gafu network, in order of preference (EMA first); GNR_checkpoint.pt (the
# release) holds G_A2B_ema only.
CHECKPOINT_GROUPS = {"G": ("G_A2B_ema", "G_A2B"), "G_B2A": ("G_B2A_ema", "G_B2A"), "D_A": ("D_A",),
                     "D_B": ("D_B",), "D_L": ("D_L",)}
NETWORK_KIND = {"G": "generator", "G_B2A": "generator", "D_A": "discriminator", "D_B": "discriminator",
                "D_L": "latent"}
G_MARKER = "encoder.stem.0.0.weight"      # a key of every Generator state dict (tells a bare one)
_MAX_LISTED = 12


@dataclasses.dataclass(frozen=True)
class GNRLeaf(K.Leaf):
    shape: Shape = ()     # our (gafu) shape of the leaf at dst


Table = tuple[list[GNRLeaf], dict[str, np.ndarray]]     # leaves, fixed filter buffers {key: value}
P = ("params",)


# ----------------------------------------------------------------------------------------------------------------
# Building blocks (one per reference module; each returns its leaves and fixed buffers)


def _linear(p: str, dst: Path, i: int, o: int) -> Table:
    """EqualLinear(i, o): weight [o,i] -> kernel [i,o], bias [o]."""
    return [GNRLeaf(f"{p}.weight", dst + ("kernel",), "dense", (i, o)),
            GNRLeaf(f"{p}.bias", dst + ("bias",), "same", (o,))], {}


def _conv_layer(p: str, dst: Path, k: int, i: int, o: int, *, down: bool = False, act: bool = True,
                bias: bool = True) -> Table:
    """ConvLayer(i, o, k, downsample=down, activate=act, bias=bias): [Blur?, EqualConv2d, FusedLeakyReLU?]."""
    fixed = {f"{p}.0.kernel": K.fir_kernel()} if down else {}
    at = 1 if down else 0
    leaves = [GNRLeaf(f"{p}.{at}.weight", dst + ("weight",), "conv", (k, k, i, o))]
    if bias:
        key = f"{p}.{at + 1}.bias" if act else f"{p}.{at}.bias"      # FusedLeakyReLU's, or EqualConv2d's own
        leaves.append(GNRLeaf(key, dst + ("bias",), "same", (o,)))
    return leaves, fixed


def _res_block(p: str, dst: Path, i: int, o: int, down: bool = True) -> Table:
    """ResBlock(i, o, downsample=down): conv1 (3x3) -> conv0, conv2 (3x3, down) -> conv1, skip (1x1, no bias)."""
    parts = [_conv_layer(f"{p}.conv1", dst + ("conv0",), 3, i, i),
             _conv_layer(f"{p}.conv2", dst + ("conv1",), 3, i, o, down=down)]
    if down or i != o:
        parts.append(_conv_layer(f"{p}.skip", dst + ("skip",), 1, i, o, down=down, act=False, bias=False))
    return _join(parts)


def _styled_conv(p: str, dst: Path, i: int, o: int, w: int, up: bool = False) -> Table:
    """StyledConv(i, o, 3, w, upsample=up): modulated conv (weight [1,o,i,3,3]) + FusedLeakyReLU bias."""
    leaves = [GNRLeaf(f"{p}.conv.weight", dst + ("weight",), "modconv", (3, 3, i, o)),
              GNRLeaf(f"{p}.conv.modulation.weight", dst + ("affine", "kernel"), "dense", (w, i)),
              GNRLeaf(f"{p}.conv.modulation.bias", dst + ("affine", "bias"), "same", (i,)),
              GNRLeaf(f"{p}.activate.bias", dst + ("bias",), "same", (o,))]
    return leaves, ({f"{p}.conv.blur.kernel": K.fir_kernel(4.0)} if up else {})


def _to_rgb(p: str, dst: Path, i: int, c: int, w: int, up: bool) -> Table:
    """ToRGB(i, w, upsample=up): 1x1 modulated conv (weight [1,c,i,1,1]), bias [1,c,1,1], skip Upsample."""
    leaves = [GNRLeaf(f"{p}.conv.weight", dst + ("weight",), "modconv", (1, 1, i, c)),
              GNRLeaf(f"{p}.conv.modulation.weight", dst + ("affine", "kernel"), "dense", (w, i)),
              GNRLeaf(f"{p}.conv.modulation.bias", dst + ("affine", "bias"), "same", (i,)),
              GNRLeaf(f"{p}.bias", dst + ("bias",), "rgb_bias_ros", (c,))]
    return leaves, ({f"{p}.upsample.kernel": K.fir_kernel(4.0)} if up else {})


def _join(parts: list[Table]) -> Table:
    leaves: list[GNRLeaf] = []
    fixed: dict[str, np.ndarray] = {}
    for lv, fx in parts:
        leaves += lv
        fixed.update(fx)
    return leaves, fixed


def _halvings(top: int, stop: int) -> list[int]:
    """top, top/2, .., 2*stop: the input resolutions of the blocks that halve a map from top down to stop."""
    return [top >> k for k in range(int(math.log2(top // stop)))]


def _tower(p: str, dst: Path, cfg: GNRConfig, stop: int) -> tuple[Table, int]:
    """Discriminator.make_net_(stop) / the encoder stem's first part: ConvLayer(3, ch(R), 1), then ResBlocks
    R -> stop; also the next free index of the Sequential."""
    r, ch = cfg.resolution, cfg.channels
    parts = [_conv_layer(f"{p}.0", dst + (f"b{r}", "fromrgb"), 1, cfg.img_channels, ch(r))]
    res = _halvings(r, stop)
    parts += [_res_block(f"{p}.{n}", dst + (f"b{s}",), ch(s), ch(s // 2)) for n, s in enumerate(res, start=1)]
    return _join(parts), len(res) + 1


# ----------------------------------------------------------------------------------------------------------------
# Networks


def generator_table(cfg: GNRConfig) -> Table:
    """model.py Generator(R, num_down, latent_dim, n_mlp, n_res, lr_mlp) (its style_dim is fixed at 512)."""
    c, ch, w = cfg.content_res, cfg.channels, cfg.style_dim
    enc, dec, bc = P + ("encoder",), P + ("decoder",), f"b{c}"
    parts = [_linear(f"mapping.{i}", P + ("mapping", f"fc{i}"), cfg.latent_dim if i == 0 else w, w)
             for i in range(cfg.n_mlp)]
    stem, n = _tower("encoder.stem", enc, cfg, c)
    parts.append(stem)
    parts += [_res_block(f"encoder.stem.{n + i}", enc + (bc, f"res{i}"), ch(c), ch(c), down=False)
              for i in range(cfg.n_res)]
    parts += [_conv_layer(f"encoder.content.{i}", enc + (bc, f"content{i}"), 1, ch(c), ch(c)) for i in (0, 1)]
    style = _halvings(c, 4)
    parts += [_conv_layer(f"encoder.style.{j}", enc + (f"b{r}", "style"), 3, ch(r), ch(r // 2), down=True)
              for j, r in enumerate(style)]
    head = enc + ("b4_out" if c == 4 else "b4",)                 # nets/gnr.py Encoder: b4 holds the core at C = 4
    n = len(style)                                                # encoder.style.{n} is the Flatten
    parts += [_linear(f"encoder.style.{n + 1}", head + ("fc",), ch(4) * 16, ch(4)),
              _linear(f"encoder.style.{n + 2}", head + ("style_out",), ch(4), cfg.latent_dim)]
    for i in range(cfg.n_res):
        parts += [_styled_conv(f"adain_bottleneck.{i}.conv{k + 1}", dec + (bc, f"res{i}", f"conv{k}"), ch(c), ch(c), w)
                  for k in (0, 1)]
    parts += [_styled_conv("conv1", dec + (bc, "conv1"), ch(c), ch(c), w),
              _to_rgb("to_rgb1", dec + (bc, "torgb"), ch(c), cfg.img_channels, w, up=False)]
    for j, r in enumerate(reversed(_halvings(cfg.resolution, c))):    # output resolutions 2C .. R
        b = dec + (f"b{r}",)
        parts += [_styled_conv(f"convs.{2 * j}", b + ("conv0",), ch(r // 2), ch(r), w, up=True),
                  _styled_conv(f"convs.{2 * j + 1}", b + ("conv1",), ch(r), ch(r), w),
                  _to_rgb(f"to_rgbs.{j}", b + ("torgb",), ch(r), cfg.img_channels, w, up=True)]
    return _join(parts)


def discriminator_table(cfg: GNRConfig) -> Table:
    """model.py Discriminator(R): local branch to local_res, global branch to global_res, the diversity head."""
    ch, lr, gr = cfg.channels, cfg.local_res, cfg.global_res
    loc, glo = P + ("local",), P + ("global",)
    local, n = _tower("l_branch", loc, cfg, lr)
    glob, _ = _tower("g_branch", glo, cfg, gr)
    return _join([local, _conv_layer(f"l_branch.{n}", loc + (f"b{lr}", "out"), 1, ch(lr), 1, act=False),
                  glob, _conv_layer("g_adv", glo + (f"b{gr}", "out"), 1, ch(gr), 1, act=False),
                  _conv_layer("g_std.0", glo + (f"b{gr}", "std_conv"), 3, ch(gr), ch(gr // 2), down=True),
                  _linear("g_std.2", glo + (f"b{gr // 2}", "std_fc"), ch(gr // 2) * (gr // 2) ** 2,
                          cfg.diversity_features),
                  _linear("g_final", glo + (f"b{gr // 2}", "std_out"), cfg.diversity_features, 1)])


def latent_table(cfg: GNRConfig) -> Table:
    """model.py LatDiscriminator(latent_dim): fc.0..3, FCMinibatchStd fc.4 (its .fc), fc.5."""
    wd = cfg.latent_d_width
    parts = [_linear(f"fc.{i}", P + (f"fc{i}",), cfg.latent_dim if i == 0 else wd, wd) for i in range(4)]
    return _join(parts + [_linear("fc.4.fc", P + ("mbstd_fc",), wd + 1, wd), _linear("fc.5", P + ("out",), wd, 1)])


def key_table(kind: str, cfg: GNRConfig) -> Table:
    """The leaves (torch key, our path, layout, our shape) and fixed filter buffers of one network kind."""
    builders = {"generator": generator_table, "discriminator": discriminator_table, "latent": latent_table}
    if kind not in builders:
        raise ValueError(f"unknown GNR network kind {kind!r}; expected one of {KINDS}")
    leaves, fixed = builders[kind](cfg)
    for what, names in (("torch key", [lf.src for lf in leaves]), ("gafu leaf", [lf.dst for lf in leaves])):
        if len(set(names)) != len(names):                          # a table bug, not a user error
            raise RuntimeError(f"GNR {kind} key table maps a {what} twice")
    return leaves, fixed


# ----------------------------------------------------------------------------------------------------------------
# Conversion


def _nest(flat: Mapping[Path, np.ndarray]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        d = out
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = v
    return out


def _raise_problems(what: str, problems: list[str]) -> None:
    if problems:
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise ConvertError(f"{what}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:_MAX_LISTED]) + more)


def params_from_state_dict(kind: str, sd: Mapping[str, np.ndarray], cfg: GNRConfig,
                           what: str = "GANsNRoses state dict") -> dict:
    """One reference network's state dict (bare keys, e.g. 'encoder.stem.0.0.weight') -> gafu variables
    {'params': ...} (float32 numpy) of kind 'generator' | 'discriminator' | 'latent' for `cfg`.

    Every parameter key must be present with its shape and every key of `sd` must be known: otherwise one
    ConvertError (a ValueError) lists each missing, misshapen or unexpected key. `what` names the source in it.
    """
    leaves, fixed = key_table(kind, cfg)
    problems, out = [], {}
    for lf in leaves:
        want, dst = lf.src_shape(lf.shape), "/".join(lf.dst)
        if lf.src not in sd:
            problems.append(f"missing key {lf.src!r} (expected shape {want}, for {dst})")
            continue
        a = np.asarray(sd[lf.src])
        if a.shape != want:
            problems.append(f"key {lf.src!r}: expected shape {want}, got {a.shape} (for {dst})")
            continue
        out[lf.dst] = np.ascontiguousarray(lf.to_ours(a), np.float32)
    for key, value in fixed.items():
        if key in sd and (np.shape(sd[key]) != value.shape or not np.allclose(sd[key], value, atol=1e-6)):
            problems.append(f"key {key!r}: resampling filter {np.asarray(sd[key]).tolist()} is not the [1,3,3,1] "
                            f"filter gafu implements")
    known = {lf.src for lf in leaves} | set(fixed)
    problems += [f"unexpected key {k!r} {tuple(np.shape(sd[k]))} (not in a GANsNRoses {kind} of this config)"
                 for k in sorted(set(sd) - known)]
    _raise_problems(f"{what} ({kind}, {cfg.resolution} px, num_down {cfg.num_down}, n_res {cfg.n_res})", problems)
    return _nest(out)


def split_groups(flat: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{'G_A2B_ema/encoder.stem.0.0.weight': a, ...} -> {'G_A2B_ema': {'encoder.stem.0.0.weight': a}, ...};
    keys without a group go to ''."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for k, v in flat.items():
        group, _, key = k.rpartition("/")
        out.setdefault(group, {})[key] = v
    return out


def params_from_checkpoint(flat: Mapping[str, np.ndarray], cfg: GNRConfig, ema: bool = True,
                           what: str = "checkpoint") -> dict[str, dict]:
    """A flat GANsNRoses checkpoint (groups joined by '/', as nets.convert_io reads it) -> {gafu network name
    (nets.gnr.NETWORKS): variables} for each network it holds. G / G_B2A take the EMA group unless ema=False
    (then the raw one, where present). A bare Generator state dict (G.state_dict() saved alone) gives {'G': ...}."""
    groups = split_groups(flat)
    found: dict[str, dict] = {}
    for net, names in CHECKPOINT_GROUPS.items():
        names = names if ema else names[::-1]
        group = next((g for g in names if g in groups), None)
        if group is not None:
            found[net] = params_from_state_dict(NETWORK_KIND[net], groups[group], cfg, f"{what}: {group}")
    if not found and G_MARKER in groups.get("", {}):
        found["G"] = params_from_state_dict("generator", groups[""], cfg, what)
    if not found:
        raise ConvertError(f"{what}: no GANsNRoses network found (looked for the groups "
                           f"{[g for gs in CHECKPOINT_GROUPS.values() for g in gs]} or a bare generator with "
                           f"{G_MARKER!r}); first keys: {sorted(flat)[:8]}")
    return found


def load_gnr_checkpoint(path: str | os.PathLike, cfg: GNRConfig, ema: bool = True) -> dict[str, dict]:
    """A GANsNRoses .pt (needs torch: gafu[torch]) or .npz of the same flat keys -> params_from_checkpoint.

    The release GNR_checkpoint.pt gives {'G': ...} (from 'G_A2B_ema'); a training ck.pt gives all five networks."""
    return params_from_checkpoint(read_checkpoint(path), cfg, ema, what=str(path))
