"""Import rosinality / NVIDIA StyleGAN2 PyTorch checkpoints into gafu model files, and export them back.

    flat state dict (.npz, or .pt/.pth with torch)  --import_state_dict-->  {"G": {params, buffers}, "D": {params}}
    model file  --export_state_dict-->  rosinality-style (or NVIDIA-style) flat state dict --> .npz

Key names and array layouts live in nets/convert_keys.py (the one place that parses index-based names); file
reading/writing in nets/convert_io.py. The architecture (resolution, mapping depth, z/w dims, channel table) is
read off the state dict's shapes; fields that shapes cannot tell (conv_clamp, mbstd group size, lr multiplier)
keep StyleGAN2Config's defaults unless overridden. Every leaf is checked against the shapes of our own model,
built from that config, so a missing key or a wrong shape is reported by key with both shapes.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nets import configs, convert_keys as K
from nets.convert_io import ConvertError, read_checkpoint, write_npz
from nets.images import check_output
from nets.stylegan2 import Discriminator, Generator, StyleGAN2Config

W_AVG_SAMPLES, W_AVG_SEED = 10_000, 123   # as NV projector.py when a checkpoint has no w_avg
_MAX_LISTED = 12                           # problems listed in one error message


@dataclasses.dataclass
class Imported:
    variables: dict        # {"G": {"params", "buffers"}, "D"?: {"params"}}, numpy float32 leaves
    config: StyleGAN2Config
    meta: dict             # provenance: format, groups used, where w_avg came from


# ----------------------------------------------------------------------------------------------------------------
# Format, groups and config


def find_group(flat: dict, fmt: str, which: str) -> str | None:
    """The top-level group holding the generator ('G') or discriminator ('D') of `fmt`; '' for a bare state dict."""
    groups, marker = (K.G_GROUPS, K.G_MARKER) if which == "G" else (K.D_GROUPS, K.D_MARKER)
    for g in groups[fmt] + ("",):
        if K.join_key(g, marker[fmt]) in flat:
            return g
    return None


def detect_format(flat: dict, path: str = "checkpoint") -> str:
    found = [f for f in K.FORMATS if find_group(flat, f, "G") is not None]
    if len(found) != 1:
        sample = sorted(flat)[:8]
        what = "both layouts" if found else "neither layout"
        raise ConvertError(f"{path}: cannot tell the checkpoint format ({what} found: a rosinality generator has "
                           f"'g_ema/{K.G_MARKER[K.ROS]}', an NVIDIA one 'G_ema/{K.G_MARKER[K.NV]}', or the same "
                           f"keys without the group); first keys: {sample}")
    return found[0]


def infer_channel_table(chs: dict[int, int]) -> tuple[int, int]:
    """(channel_base, channel_max) with ch(res) = min(channel_base // res, channel_max) reproducing `chs`."""
    cmax = max(chs.values())
    below = [r for r in sorted(chs) if chs[r] < cmax]
    # An all-equal table fits any large enough base: prefer the standard ones so configs read naturally.
    candidates = [chs[below[0]] * below[0]] if below else [32768, 16384, cmax * max(chs)]
    for base in candidates:
        if all(min(base // r, cmax) == c for r, c in chs.items()):
            return base, cmax
    raise ConvertError(f"channel widths per resolution {dict(sorted(chs.items()))} do not follow "
                       f"min(channel_base // res, channel_max) for any channel_base")


def infer_config(flat: dict, fmt: str, g_group: str, overrides: Sequence[str] = (),
                 path: str = "checkpoint") -> StyleGAN2Config:
    """The config read off the tensor shapes, then `overrides` ('conv_clamp=256', nets.configs' grammar)."""
    try:
        facts = K.generator_widths(fmt, flat, g_group)
    except KeyError as e:
        raise ConvertError(f"{path}: missing key {e.args[0]!r}, needed to read the {fmt} generator's "
                           f"architecture") from None
    chs = facts.pop("channels")
    res = max(chs)
    if res < 8 or facts["mapping_layers"] < 1:
        raise ConvertError(f"{path}: found no synthesis blocks above 4x4 or no mapping layers in the {fmt} "
                           f"generator (blocks {sorted(chs)}, mapping layers {facts['mapping_layers']})")
    base, cmax = infer_channel_table(chs)
    fields = dict(resolution=res, channel_base=base, channel_max=cmax, **facts)
    try:
        cfg = StyleGAN2Config.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise ConvertError(f"{path}: invalid config {fields}: {e}") from None
    try:
        return configs.apply_overrides(cfg, overrides)
    except (TypeError, ValueError) as e:
        raise ConvertError(f"{path}: --set: {e}") from None


def _leaves(tree: Mapping, prefix: K.Path = ()) -> dict[K.Path, object]:
    """Nested mappings -> {key path: leaf}."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_leaves(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def expected_shapes(cfg: StyleGAN2Config, with_d: bool) -> dict[K.Path, tuple[int, ...]]:
    """Shapes of every leaf of our {"G": ..., "D": ...} tree for `cfg` (traced, nothing computed)."""
    key = jax.random.key(0)
    g = jax.eval_shape(lambda k: Generator(cfg).init({"params": k}, jnp.zeros((1, cfg.z_dim)),
                                                    noise_mode="const"), key)
    tree = {"G": g}
    if with_d:
        img = jnp.zeros((1, cfg.resolution, cfg.resolution, cfg.img_channels))
        tree["D"] = jax.eval_shape(lambda k: Discriminator(cfg).init(k, img), key)
    return {p: tuple(s.shape) for p, s in _leaves(tree).items()}


def tables(fmt: str, cfg: StyleGAN2Config, g_group: str, d_group: str | None) -> tuple[list[K.Leaf], dict]:
    leaves, fixed = K.generator_table(fmt, cfg.resolution, cfg.mapping_layers, g_group)
    if d_group is not None:
        d_leaves, d_fixed = K.discriminator_table(fmt, cfg.resolution, d_group)
        leaves, fixed = leaves + d_leaves, {**fixed, **d_fixed}
    return leaves, fixed


def _check_coverage(leaves: list[K.Leaf], shapes: dict) -> None:
    """The key table must name every leaf of our model exactly once (guards the tables against model edits)."""
    dst = [lf.dst for lf in leaves]
    if len(set(dst)) != len(dst) or set(dst) != set(shapes):
        raise RuntimeError(f"key table out of sync with the model: not mapped {sorted(set(shapes) - set(dst))[:5]}, "
                           f"unknown {sorted(set(dst) - set(shapes))[:5]}")


def _raise_problems(path: str, problems: list[str]) -> None:
    if problems:
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise ConvertError(f"{path}: {len(problems)} problem(s) converting the checkpoint:\n  "
                           + "\n  ".join(problems[:_MAX_LISTED]) + more)


def _nest(flat: dict[K.Path, np.ndarray]) -> dict:
    out: dict = {}
    for p, v in flat.items():
        d = out
        for k in p[:-1]:
            d = d.setdefault(k, {})
        d[p[-1]] = v
    return out


# ----------------------------------------------------------------------------------------------------------------
# Import


def estimate_w_avg(cfg: StyleGAN2Config, g_params: dict, n: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED) -> np.ndarray:
    """Mean of the mapping over n fixed z ~ N(0, I), for checkpoints that store no w_avg. [w_dim]."""
    z = np.random.RandomState(seed).randn(n, cfg.z_dim).astype(np.float32)
    buffers = {"mapping": {"w_avg": jnp.zeros((cfg.w_dim,), jnp.float32)}}
    ws = jax.jit(lambda p, z: Generator(cfg).apply({"params": p, "buffers": buffers}, z, method=Generator.map))(
        g_params, z)                                                                       # [n,num_ws,w_dim]
    return np.asarray(jnp.mean(ws[:, 0], axis=0))


def import_state_dict(flat: dict[str, np.ndarray], fmt: str = "auto", overrides: Sequence[str] = (),
                      g_group: str | None = None, with_d: bool = True, path: str = "checkpoint") -> Imported:
    """Flat PyTorch-layout state dict -> our variables, config and provenance (see module docstring).

    fmt: 'auto', 'rosinality' or 'nvidia'. g_group: the generator's group ('g_ema', 'g', 'G_ema', '' for a bare
    state dict; default: the first found of EMA, raw, bare). with_d: also convert the discriminator if present.
    """
    fmt = detect_format(flat, path) if fmt == "auto" else fmt
    if fmt not in K.FORMATS:
        raise ConvertError(f"unknown checkpoint format {fmt!r}; expected 'auto' or one of {K.FORMATS}")
    if g_group is None:
        g_group = find_group(flat, fmt, "G")
    if g_group is None or K.join_key(g_group, K.G_MARKER[fmt]) not in flat:
        raise ConvertError(f"{path}: no {fmt} generator in group {g_group!r} (looked for "
                           f"{K.join_key(g_group or '<group>', K.G_MARKER[fmt])!r})")
    d_group = find_group(flat, fmt, "D") if with_d else None
    cfg = infer_config(flat, fmt, g_group, overrides, path)
    shapes = expected_shapes(cfg, d_group is not None)
    leaves, fixed = tables(fmt, cfg, g_group, d_group)
    _check_coverage(leaves, shapes)

    w_avg_leaf = next(lf for lf in leaves if lf.dst == ("G", "buffers", "mapping", "w_avg"))
    w_avg_optional = fmt == K.ROS and w_avg_leaf.src not in flat   # ROS-trained checkpoints keep no w_avg
    problems, out = [], {}
    for lf in leaves:
        want = lf.src_shape(shapes[lf.dst])
        if lf.src not in flat:
            if not (lf is w_avg_leaf and w_avg_optional):
                problems.append(f"missing key {lf.src!r} (expected shape {want}, for {'/'.join(lf.dst)})")
            continue
        a = np.asarray(flat[lf.src])
        if lf is w_avg_leaf and a.shape == (1,) + want:            # some tools save latent_avg as [1,w_dim]
            a = a[0]
        if a.shape != want:
            problems.append(f"key {lf.src!r}: expected shape {want}, got {a.shape} (for {'/'.join(lf.dst)})")
            continue
        out[lf.dst] = lf.to_ours(a).astype(np.float32)
    for key, value in fixed.items():
        if key in flat and (flat[key].shape != value.shape or not np.allclose(flat[key], value, atol=1e-6)):
            problems.append(f"key {key!r}: resampling filter {np.asarray(flat[key]).tolist()} is not the [1,3,3,1] "
                            f"filter gafu implements")
    groups = [g for g in (g_group, d_group) if g is not None]
    known = {lf.src for lf in leaves} | set(fixed)
    unknown = sorted(k for k in flat if k not in known and any(
        (k.startswith(g + "/") if g else "/" not in k) for g in groups))
    problems += [f"unexpected key {k!r} {tuple(np.shape(flat[k]))} (not part of an unconditional StyleGAN2 "
                 f"with this config)" for k in unknown]
    _raise_problems(path, problems)

    variables = _nest(out)
    meta = {"format": fmt, "generator": g_group or "<bare state dict>",
            "discriminator": d_group if d_group is not None else None, "w_avg": w_avg_leaf.src}
    if w_avg_optional:
        g = variables["G"]
        g.setdefault("buffers", {}).setdefault("mapping", {})["w_avg"] = estimate_w_avg(cfg, g["params"])
        meta["w_avg"] = f"estimated: mean of the mapping over {W_AVG_SAMPLES} z (seed {W_AVG_SEED})"
    return Imported(variables, cfg, meta)


# ----------------------------------------------------------------------------------------------------------------
# Export


def export_state_dict(variables: dict, cfg: StyleGAN2Config, fmt: str = K.ROS) -> dict[str, np.ndarray]:
    """Our {"G": ..., "D"?: ...} variables -> a flat PyTorch-layout state dict of `fmt` (groups joined by '/').

    rosinality: 'g_ema/...', 'latent_avg' and, with a discriminator, 'd/...'; nvidia: 'G_ema/...', 'D/...'.
    Includes the resampling-filter buffers, so torch `load_state_dict(strict=True)` accepts each group.
    """
    if fmt not in K.FORMATS:
        raise ConvertError(f"unknown export format {fmt!r}; expected one of {K.FORMATS}")
    if "G" not in variables:
        raise ConvertError(f"nothing to export: the variables hold {sorted(variables)}, no generator 'G'")
    d_group = K.D_GROUPS[fmt][0] if "D" in variables else None
    leaves, fixed = tables(fmt, cfg, K.G_GROUPS[fmt][0], d_group)
    ours = {p: np.asarray(v) for p, v in _leaves({k: variables[k] for k in ("G", "D") if k in variables}).items()}
    shapes = expected_shapes(cfg, d_group is not None)
    _check_coverage(leaves, shapes)
    problems = [f"{'/'.join(p)}: expected shape {s}, got {ours[p].shape}" for p, s in shapes.items()
                if p in ours and ours[p].shape != s]
    problems += [f"missing {'/'.join(p)} (expected shape {s})" for p, s in shapes.items() if p not in ours]
    problems += [f"unexpected {'/'.join(p)}" for p in ours if p not in shapes]
    _raise_problems("model", problems)
    flat = {lf.src: np.array(lf.to_src(ours[lf.dst]), np.float32, order="C") for lf in leaves}  # 0-d stays 0-d
    flat.update(fixed)
    return flat


def ros_constructor(cfg: StyleGAN2Config) -> str | None:
    """The rosinality `Generator(...)` call that builds this architecture, or None if its widths cannot."""
    cm, rem = divmod(cfg.channel_base, 16384)
    if cfg.channel_max != 512 or rem or cm < 1 or cfg.z_dim != cfg.w_dim or cfg.img_channels != 3:
        return None
    return (f"Generator(size={cfg.resolution}, style_dim={cfg.w_dim}, n_mlp={cfg.mapping_layers}, "
            f"channel_multiplier={cm})")


# ----------------------------------------------------------------------------------------------------------------
# Files


def convert_file(src: str | os.PathLike, out: str | os.PathLike, fmt: str = "auto", overrides: Sequence[str] = (),
                 g_group: str | None = None, with_d: bool = True, overwrite: bool = False) -> tuple[Path, Imported]:
    """Checkpoint file -> gafu model file {"G": {params, buffers}, "D": {params}} (D only if the file has one)."""
    from nets.modelfile import save_model

    src, out = Path(src), check_output(out, overwrite=overwrite, folder=True)   # before the (long) read
    imp = import_state_dict(read_checkpoint(src), fmt, overrides, g_group, with_d, path=str(src))
    meta = {"converted_from": str(src.absolute()), **imp.meta}
    return save_model(out, imp.variables, imp.config, arch="stylegan2", meta=meta, overwrite=overwrite), imp


def export_file(model: str | os.PathLike, out: str | os.PathLike, fmt: str = K.ROS,
                overwrite: bool = False) -> tuple[Path, StyleGAN2Config]:
    """gafu model file -> .npz state dict of `fmt` (flat keys joined by '/')."""
    from nets import registry

    check_output(out, overwrite=overwrite)
    _, cfg, mf = registry.load(model, "stylegan2")
    flat = export_state_dict(mf.variables, cfg, fmt)
    return write_npz(out, flat, overwrite=overwrite), cfg
