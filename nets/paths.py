"""The one place that reads names: key path -> block resolution, layer, collection rule, Toonify layer position.

The naming rule. Every spatial block of a gafu model is a submodule named `b{R}`, given with an explicit `name=`.
For generators and decoders R is the block's OUTPUT resolution; for discriminators and encoders it is its INPUT
resolution (NVlabs' convention, stylegan2-ada-pytorch training/networks.py: D's `b256` holds fromRGB and the first
block). One block per resolution: several blocks at one resolution (SPADE's two middle blocks at 16 px) are layers
inside that `b{R}`. Inside a block the layer names are fixed per family (`conv0`, `conv1`, `torgb` for StyleGAN2).
So a leaf's resolution is read off its key path, e.g. ('params', 'synthesis', 'b64', 'conv0', 'weight') -> 64,
layer 'conv0'. Everything that needs to know what a leaf *is* asks this module; nothing else parses names.

The first entry of a variables tree's path is its Flax collection; COLLECTION_RULES says how blends treat each.

Paths are the key tuples of `jax.tree_util.tree_flatten_with_path`; `path_str` turns them into the big_vision
style "params/synthesis/b64/conv0/weight" used in messages, scopes and channel-swap masks.
"""
from __future__ import annotations

import math
import re
import types
from collections.abc import Mapping, Sequence
from typing import Any

KeyPath = tuple[Any, ...]            # the key entries of one leaf (DictKey, GetAttrKey, SequenceKey, ...)
Names = tuple[str, ...]              # the same path as plain strings
_BLOCK = re.compile(r"b(\d+)")

# StyleGAN2 generator layers by Toonify "level" (justinpinkney/stylegan2 blend_models.py): level 0 opens a block
# (the 4x4 const or the up-sampling conv0), level 1 closes it (conv1 and the block's ToRGB, which JP blends
# together with conv1).
TOONIFY_LEVEL0 = ("const", "conv0")
TOONIFY_LEVEL1 = ("conv1", "torgb")
NOISE_CONST = "noise_const"          # StyleGAN2 leaf: a block layer's fixed noise map [R,R] (buffers)
NOISE_STRENGTH = "noise_strength"    # StyleGAN2 leaf: the learned scale of a layer's noise input (params)

# Variable collections (the first key of a Flax variables tree).
PARAMS = "params"                    # the trainable collection; JP blends only trainables
BUFFERS = "buffers"                  # non-trainable state kept by gafu's models (StyleGAN2: w_avg, noise_const)
BATCH_STATS = "batch_stats"          # batch-norm running mean / var (Flax's name)
SPECTRAL = "spectral"                # spectral-norm power-iteration vectors
PREVIEWS = "previews"                # conditions a conditional generator's model file carries for seed-only tools
# The subtrees of a StyleGAN2 generator's variables that are keyed on resolution: every leaf in them is in a block.
GENERATOR_SCOPE = ("params/synthesis", "buffers/synthesis")

# How blends treat each collection's leaves:
AVERAGE = "average"                  # weighted per leaf, with the weights of its block (or the global weights)
PICK_IN_BLOCKS = "pick in blocks"    # block leaves whole from the parent with the larger share (the mean of two
                                     # N(0,1) noise maps is not N(0,1) noise); others averaged with the global weights
PICK = "pick"                        # every leaf whole from the parent with the larger share, never averaged
                                     # (running statistics and power-iteration vectors belong to one set of weights)
COLLECTION_RULES: Mapping[str, str] = types.MappingProxyType(
    {PARAMS: AVERAGE, BUFFERS: PICK_IN_BLOCKS, BATCH_STATS: PICK, SPECTRAL: PICK, PREVIEWS: PICK})


class PathError(ValueError):
    """A key path does not follow the naming rule (or not the one an operation needs)."""


def key_name(entry: Any) -> str:
    """The name of one key entry: dict key, attribute name or sequence index, as a string."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def names_of(path: KeyPath | Sequence[str]) -> Names:
    return tuple(e if isinstance(e, str) else key_name(e) for e in path)


def path_str(path: KeyPath | Sequence[str]) -> str:
    """('params', 'synthesis', 'b4', 'const') -> 'params/synthesis/b4/const'."""
    return "/".join(names_of(path))


def parse_prefix(prefix: str) -> Names:
    """'params/synthesis' -> ('params', 'synthesis'); '' -> () (the whole tree)."""
    return tuple(p for p in prefix.strip("/").split("/") if p)


def is_under(path: KeyPath | Sequence[str], prefix: Names) -> bool:
    names = names_of(path)
    return names[:len(prefix)] == prefix


def block_index(path: KeyPath | Sequence[str]) -> int | None:
    """Index of the `b{R}` entry in the path, or None. Two block names in one path are an error (ambiguous)."""
    hits = [i for i, n in enumerate(names_of(path)) if _BLOCK.fullmatch(n)]
    if len(hits) > 1:
        raise PathError(f"'{path_str(path)}' has {len(hits)} block names; a leaf belongs to one block b{{R}}")
    return hits[0] if hits else None


def resolution_of(path: KeyPath | Sequence[str]) -> int | None:
    """Block resolution R of the leaf at `path` (from its `b{R}` key), or None outside any block."""
    i = block_index(path)
    if i is None:
        return None
    res = int(_BLOCK.fullmatch(names_of(path)[i]).group(1))
    if res < 1:
        raise PathError(f"'{path_str(path)}': block resolution must be positive; got b{res}")
    return res


def layer_of(path: KeyPath | Sequence[str]) -> str | None:
    """The entry right after `b{R}` (the layer: 'conv0', 'torgb', 'const', ...), or None outside a block."""
    i = block_index(path)
    names = names_of(path)
    if i is None or i + 1 >= len(names):
        return None
    return names[i + 1]


def layer_path(path: KeyPath | Sequence[str]) -> Names:
    """Path of the leaf's layer: up to the entry after b{R} ('params/synthesis/b8/conv0'), else its parent."""
    i = block_index(path)
    names = names_of(path)
    return names[:i + 2] if i is not None else names[:-1]


def leaf_name(path: KeyPath | Sequence[str]) -> str | None:
    """The last entry of the path ('weight', 'noise_const', ...), or None for an empty path."""
    names = names_of(path)
    return names[-1] if names else None


def is_block_buffer(path: KeyPath | Sequence[str]) -> bool:
    """A leaf of the 'buffers' collection that lives in a block (StyleGAN2: the noise_const maps)."""
    names = names_of(path)
    return bool(names) and names[0] == BUFFERS and resolution_of(path) is not None


def collection_rule(path: KeyPath | Sequence[str]) -> str:
    """COLLECTION_RULES' entry for the leaf's collection (its first key); an unknown collection is an error."""
    names = names_of(path)
    coll = names[0] if names else ""
    if coll not in COLLECTION_RULES:
        raise PathError(f"'{path_str(path)}' is in collection {coll!r}, which has no blend rule; known collections: "
                        f"{sorted(COLLECTION_RULES)} (a tree to blend is a variables tree keyed by collection)")
    return COLLECTION_RULES[coll]


def picks_whole(path: KeyPath | Sequence[str]) -> bool:
    """Whether blends take this leaf whole from the parent with the larger share instead of averaging it."""
    rule = collection_rule(path)
    return rule == PICK or (rule == PICK_IN_BLOCKS and resolution_of(path) is not None)


def direct_child(path: KeyPath | Sequence[str], layer: Names) -> bool:
    """True if the leaf sits directly inside `layer` (e.g. conv1/weight, not conv1/affine/kernel)."""
    names = names_of(path)
    return len(names) == len(layer) + 1 and names[:len(layer)] == layer


# ---- Toonify (Pinkney's blend_models.py) layer positions ------------------------------------------------------

def _log2_exact(res: int, where: str) -> int:
    k = int(round(math.log2(res))) if res > 0 else -1
    if res < 4 or 2 ** k != res:
        raise PathError(f"{where}: Toonify positions need power-of-two block resolutions >= 4; got {res}")
    return k


def toonify_mid(resolution: int, level: int) -> int:
    """Position of (resolution, level), the centre JP's blend is taken from: 2*log2(r) - 4 + level."""
    if level not in (0, 1):
        raise ValueError(f"level must be 0 or 1; got {level}")
    return 2 * _log2_exact(resolution, "resolution") - 4 + level


def toonify_position(path: KeyPath | Sequence[str]) -> int | None:
    """JP's position of a trainable leaf, or None for leaves JP never blends (they come from model_1).

    b4/const -> 0, b4/torgb -> 1, b{R}/conv0 -> 2*log2(R)-4, b{R}/conv1 and b{R}/torgb -> 2*log2(R)-3.
    None: leaves outside the params collection (w_avg, noise maps), outside any block (the mapping network), and
    b4/conv1 (its TF scope '4x4/Conv' matches neither 'Conv0_up' nor 'Conv1' in JP's name search).
    """
    names = names_of(path)
    res = resolution_of(path)
    if not names or names[0] != PARAMS or res is None:
        return None
    layer = layer_of(path)
    p0 = 2 * _log2_exact(res, f"'{path_str(path)}'") - 4
    if res == 4 and layer == "conv1":
        return None
    if layer in TOONIFY_LEVEL0:
        return p0
    if layer in TOONIFY_LEVEL1:
        return p0 + 1
    raise PathError(f"'{path_str(path)}': the Toonify-compatible mode knows StyleGAN2 generator layers "
                    f"{TOONIFY_LEVEL0 + TOONIFY_LEVEL1} inside b{{R}} blocks; got {layer!r}")
