"""Resolution-keyed mixing of model weights: layer swap, logistic blend, lerp, schedules, N-way, channel swap.

Toonify (Pinkney & Adler 2020, arXiv 2010.05334) blends two generators that share an ancestor per layer:
theta = (1 - alpha(R)) * theta_A + alpha(R) * theta_B, where R is the resolution of the layer's block and alpha is
the share of B. A hard layer swap is a step alpha, the smooth blend a logistic alpha, ESRGAN's network
interpolation (xinntao/ESRGAN net_interp.py) a constant alpha. Every function here is one tree_map keyed on the
resolution that nets.paths reads off the key path, so it works for any tree whose spatial blocks are named b{R}.

Which leaves are keyed on resolution: by default every leaf with a b{R} in its key path. With `scope` (path
prefixes, e.g. nets.paths.GENERATOR_SCOPE = params/synthesis + buffers/synthesis) exactly the leaves under those
prefixes, and each of them must sit in a block. The other leaves (the mapping network, w_avg, a stem or head) are
"global" and get `global_alpha`, by default the alpha of the lowest resolution: they come with the model that gives
the low resolutions. Each collection is treated by its rule in nets.paths.COLLECTION_RULES (the default `pick`):
params are averaged; block buffers (the noise_const maps) and every batch-norm statistic and spectral-norm vector
are picked whole from the parent with the larger share, never averaged; a collection without a rule is an error.

All functions are pure and jit-able: tree structure, scope and schedule keys are static, alphas may be traced
arrays. Leaves taken whole from one parent are returned as given (no copy); the computed ones come from one jitted
call (interp.mix), so an eager call agrees bit for bit with the same call under jit. Numpy trees in, numpy out.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nets import paths
from interp.mix import BlendError, Lerp, is_static, mix

PyTree = Any
Alpha = Any                                         # a Python number or a (possibly traced) scalar array
Schedule = Alpha | Mapping[int, Alpha] | Callable[[int], Alpha]
PickRule = Callable[[paths.KeyPath], bool]


# ---- structure checks -----------------------------------------------------------------------------------------

def _desc(x) -> str:
    shape = tuple(getattr(x, "shape", np.shape(x)))
    dtype = getattr(x, "dtype", None) or np.asarray(x).dtype
    return f"{np.dtype(dtype).name}{list(shape)}"


def check_compatible(trees: Sequence[PyTree], names: Sequence[str]) -> list[list[tuple[paths.KeyPath, Any]]]:
    """Raise one BlendError naming the first key path where the trees differ (presence, shape or dtype).

    Returns the flattened (path, leaf) lists of every tree, in the same order.
    """
    flats = [jax.tree_util.tree_flatten_with_path(t) for t in trees]
    ref_names = [paths.names_of(p) for p, _ in flats[0][0]]
    for (flat, treedef), name in zip(flats[1:], names[1:]):
        other = [paths.names_of(p) for p, _ in flat]
        if other != ref_names:
            other_set = set(other)
            for pa, pb in zip(ref_names + [None], other + [None]):
                if pa != pb:
                    break
            if pa is not None and pa not in other_set:
                raise BlendError(f"{names[0]} and {name} differ at '{paths.path_str(pa)}': "
                                 f"{names[0]} has it, {name} does not")
            raise BlendError(f"{names[0]} and {name} differ at '{paths.path_str(pb)}': "
                             f"{name} has it, {names[0]} does not")
        for (path, x), (_, y) in zip(flats[0][0], flat):
            if _desc(x) != _desc(y):
                raise BlendError(f"{names[0]} and {name} differ at '{paths.path_str(path)}': "
                                 f"{names[0]} {_desc(x)}, {name} {_desc(y)}")
        if treedef != flats[0][1]:
            raise BlendError(f"{names[0]} and {name} have the same key paths but different containers: "
                             f"{flats[0][1]} vs {treedef}")
    return [f for f, _ in flats]


def leaf_resolutions(tree: PyTree, scope: Sequence[str] | None = None) -> list[tuple[paths.KeyPath, int | None]]:
    """(path, R) per leaf, R = None for global leaves; errors on a leaf without a block inside a blended subtree.

    scope: None = every leaf with a b{R} in its path is keyed on it; otherwise path prefixes like
    "params/synthesis" whose leaves must all sit in a block ("" = the whole tree, [] = nothing keyed).
    """
    flat = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    if scope is None:
        return [(p, paths.resolution_of(p)) for p in flat]
    subtrees = {paths.parse_prefix(s) for s in scope}
    for s in sorted(subtrees):
        if not any(paths.is_under(p, s) for p in flat):
            top = sorted({paths.names_of(p)[0] for p in flat if p})
            raise BlendError(f"scope '{paths.path_str(s)}' matches no leaf; the tree starts with {top}")
    out = []
    for p in flat:
        inside = [s for s in subtrees if paths.is_under(p, s)]
        res = paths.resolution_of(p)
        if inside and res is None:
            raise BlendError(f"leaf '{paths.path_str(p)}' has no block resolution (no b{{R}} in its path) but lies "
                             f"in the blended subtree '{paths.path_str(max(inside, key=len))}'")
        out.append((p, res if inside else None))
    return out


def resolutions(tree: PyTree, scope: Sequence[str] | None = None) -> tuple[int, ...]:
    """Sorted block resolutions found in the blended subtrees of `tree`."""
    return tuple(sorted({r for _, r in leaf_resolutions(tree, scope) if r is not None}))


def check_resolution(res: int, valid: Sequence[int], what: str = "resolution") -> None:
    if res not in valid:
        raise BlendError(f"{what} {res} is not a block resolution of this model; valid: {list(valid)}")


# ---- schedules ------------------------------------------------------------------------------------------------

def _as_weights(value, n: int, what: str) -> list:
    """A weight vector for n parents from a sequence or an [n] array (numpy values stay static)."""
    if isinstance(value, Lerp):
        if n != 2:
            raise BlendError(f"{what}: an alpha blends 2 parents, not {n}")
        return value
    if isinstance(value, np.ndarray):
        value = [float(v) for v in value.reshape(-1)]
    if not hasattr(value, "shape"):
        value = list(value)
        if len(value) != n:
            raise BlendError(f"{what}: expected {n} weights, got {len(value)}")
        return value
    if value.shape != (n,):
        raise BlendError(f"{what}: expected weights of shape ({n},), got {value.shape}")
    return [value[i] for i in range(n)]


def schedule_fn(schedule: Schedule, valid: Sequence[int]) -> Callable[[int], Any]:
    """A per-resolution value from a constant, a {R: value} dict (must cover exactly `valid`) or a callable."""
    if callable(schedule):
        return schedule
    if isinstance(schedule, Mapping):
        unknown = sorted(set(schedule) - set(valid))
        if unknown:
            raise BlendError(f"schedule has resolutions {unknown} that the model lacks; valid: {list(valid)}")
        missing = sorted(set(valid) - set(schedule))
        if missing:
            raise BlendError(f"schedule gives no value for resolutions {missing}; it needs all of {list(valid)}")
        return schedule.__getitem__
    return lambda res: schedule


def step_schedule(r_swap: int) -> Callable[[int], float]:
    """alpha(R) = 0 below r_swap, 1 from r_swap up (r_swap = first resolution taken from the second model)."""
    return lambda res: 0.0 if res < r_swap else 1.0


def logistic_schedule(r_swap: int, blend_width: float) -> Callable[[int], float]:
    """alpha(R) = 1 / (1 + exp(-(log2 R - log2 r_swap + 1/2) / blend_width)), blend_width in blocks (octaves).

    Centred half way between r_swap/2 and r_swap, so it is monotone in R and tends to step_schedule(r_swap) as
    blend_width -> 0.
    """
    if not blend_width > 0:
        raise BlendError(f"blend_width must be > 0 (use a hard swap for a step); got {blend_width}")

    def alpha(res: int) -> float:
        e = -(math.log2(res) - math.log2(r_swap) + 0.5) / blend_width
        return 0.0 if e > 700 else 1.0 / (1.0 + math.exp(e))
    return alpha


# ---- public operations ----------------------------------------------------------------------------------------

def blend_n(trees: Sequence[PyTree], weights: Schedule, *, global_weights: Any = None,
            scope: Sequence[str] | None = None, pick: PickRule = paths.picks_whole,
            names: Sequence[str] | None = None) -> PyTree:
    """N-way weighted blend sum_i w_i(R) * tree_i; `weights` gives N weights per resolution (constant, dict or
    callable). Weights are used as given: make them sum to 1 for a convex combination (models must share an
    ancestor). Leaves for which `pick(path)` holds come whole from the tree with the largest weight."""
    n = len(trees)
    if n < 1:
        raise BlendError("blend_n needs at least one tree")
    names = list(names or [f"model {i}" for i in range(n)])
    flats = check_compatible(trees, names)
    plan = leaf_resolutions(trees[0], scope)
    valid = sorted({r for _, r in plan if r is not None})
    if valid:
        sched = schedule_fn(weights, valid)
        per_res = {r: _as_weights(sched(r), n, f"weights at resolution {r}") for r in valid}
    elif callable(weights) or isinstance(weights, Mapping):
        raise BlendError("a per-resolution schedule needs b{R} blocks, and this tree has none in its blended "
                         "subtrees")
    glob = per_res[valid[0]] if global_weights is None and valid else \
        _as_weights(weights if global_weights is None else global_weights, n, "global weights")
    items = [(path, [f[i][1] for f in flats], glob if res is None else per_res[res], pick(path))
             for i, (path, res) in enumerate(plan)]
    return jax.tree.unflatten(jax.tree.structure(trees[0]), mix(items))


def blend(a: PyTree, b: PyTree, alpha: Schedule, *, global_alpha: Alpha | None = None,
          scope: Sequence[str] | None = None, pick: PickRule = paths.picks_whole,
          names: Sequence[str] = ("A", "B")) -> PyTree:
    """(1 - alpha(R)) * a + alpha(R) * b per leaf of block b{R}; alpha is the share of b (constant, dict, callable)."""
    def pair(x):
        return (1 - x, x) if is_static(x) else Lerp(x)

    if callable(alpha):
        w = lambda res: pair(alpha(res))                # noqa: E731
    elif isinstance(alpha, Mapping):
        w = {r: pair(x) for r, x in alpha.items()}
    else:
        w = pair(alpha)
    gw = None if global_alpha is None else pair(global_alpha)
    return blend_n([a, b], w, global_weights=gw, scope=scope, pick=pick, names=names)


def lerp(a: PyTree, b: PyTree, alpha: Alpha, *, names: Sequence[str] = ("A", "B")) -> PyTree:
    """ESRGAN network interpolation: every leaf (1 - alpha) * a + alpha * b (picked leaves: see module doc)."""
    return blend(a, b, alpha, global_alpha=alpha, names=names)


def swap(low: PyTree, high: PyTree, r_swap: int, *, scope: Sequence[str] | None = None,
         names: Sequence[str] = ("low", "high")) -> PyTree:
    """Hard layer swap: blocks below r_swap from `low`, blocks r_swap and up from `high`.

    Global leaves follow the lowest block, so they come from `low` unless r_swap is the lowest resolution (then the
    result is `high`). Either model may give the low resolutions: pass it first.
    """
    check_resolution(r_swap, resolutions(low, scope), "r_swap")
    return blend(low, high, step_schedule(r_swap), scope=scope, names=names)


def smooth_swap(low: PyTree, high: PyTree, r_swap: int, blend_width: float, *,
                scope: Sequence[str] | None = None, names: Sequence[str] = ("low", "high")) -> PyTree:
    """Logistic blend around r_swap (see logistic_schedule); blend_width -> 0 gives swap(low, high, r_swap)."""
    check_resolution(r_swap, resolutions(low, scope), "r_swap")
    return blend(low, high, logistic_schedule(r_swap, blend_width), scope=scope, names=names)


def channel_swap(a: PyTree, b: PyTree, masks: Mapping[str, Any], *,
                 names: Sequence[str] = ("A", "B")) -> PyTree:
    """Swap single output channels inside chosen layers: a finer grain than whole layers.

    masks: {"params/synthesis/b16/conv1": bool[C], ...}. Inside a masked layer, every leaf directly in it with a
    last axis (weight [..,C], bias [C]; NHWC/HWIO keeps output channels last) takes channel c from `b` where
    mask[c] holds. The layer's other leaves (its style affine, which belongs to the input channels, and scalars
    such as noise_strength) come from `b` only when the whole mask is true, so an all-true mask is the full swap of
    the layer and an all-false one leaves `a` untouched. Masks may be traced; their shapes are static.
    """
    flats = check_compatible([a, b], names)
    layers = {paths.parse_prefix(k): (v if hasattr(v, "shape") else np.asarray(v)) for k, v in masks.items()}
    flat_paths = [p for p, _ in flats[0]]
    for layer, m in layers.items():
        if m.ndim != 1 or m.dtype != np.bool_:
            raise BlendError(f"mask for '{paths.path_str(layer)}' must be a 1-D bool array; got {_desc(m)}")
        if not any(paths.is_under(p, layer) for p in flat_paths):
            raise BlendError(f"mask for '{paths.path_str(layer)}' matches no leaf of {names[0]}")
        inner = [paths.path_str(o) for o in layers if o != layer and o[:len(layer)] == layer]
        if inner:
            raise BlendError(f"masks overlap: '{paths.path_str(layer)}' contains {inner}")
    leaves = []
    for (path, x), (_, y) in zip(*flats):
        layer = next((q for q in layers if paths.is_under(path, q)), None)
        if layer is None:
            leaves.append(x)
            continue
        m = layers[layer]
        if paths.direct_child(path, layer) and np.ndim(x) >= 1:
            if x.shape[-1] != m.shape[0]:
                raise BlendError(f"mask for '{paths.path_str(layer)}' has {m.shape[0]} channels but "
                                 f"'{paths.path_str(path)}' has {x.shape[-1]} output channels ({_desc(x)})")
            if isinstance(m, np.ndarray) and (m.all() or not m.any()):
                leaves.append(y if m.all() else x)                               # whole: no copy
                continue
            sel = m.reshape((1,) * (np.ndim(x) - 1) + (m.shape[0],))            # broadcast along the last axis
            xp = np if all(isinstance(v, np.ndarray) for v in (x, y, m)) else jnp
            leaves.append(xp.where(sel, y, x))
        elif isinstance(m, np.ndarray):
            leaves.append(y if m.all() else x)
        else:
            leaves.append(jnp.where(jnp.all(m), y, x))
    return jax.tree.unflatten(jax.tree.structure(a), leaves)


def blend_models(model_1: PyTree, model_2: PyTree, resolution: int, level: int = 0,
                 blend_width: float | None = None, *, names: Sequence[str] = ("model_1", "model_2")) -> PyTree:
    """Toonify-compatible mode: Pinkney's blend_models.py on generator variables {"params", "buffers"}.

    model_1 gives the low resolutions, model_2 the high ones. Per trainable leaf x = position - mid, with JP's
    positions (nets.paths.toonify_position) and mid = 2*log2(resolution) - 4 + level; y = 1 if x > 1 else 0
    (hard), or 1 / (1 + exp(-x / blend_width)) (smooth); out = model_2 * y + model_1 * (1 - y). The mapping
    network, w_avg, the noise buffers and b4/conv1 always come from model_1.
    """
    if blend_width is not None and not blend_width > 0:
        raise BlendError(f"blend_width must be > 0, or None for JP's hard switch; got {blend_width}")
    flats = check_compatible([model_1, model_2], names)
    pos = [paths.toonify_position(p) for p, _ in flats[0]]
    valid = sorted({r for (p, _), q in zip(flats[0], pos) if q is not None for r in [paths.resolution_of(p)]})
    check_resolution(resolution, valid, "resolution")
    mid = paths.toonify_mid(resolution, level)
    items = []
    for (path, x1), (_, x2), q in zip(*flats, pos):
        y = 0.0 if q is None else toonify_y(q - mid, blend_width)
        items.append((path, [x1, x2], [1 - y, y], False))
    return jax.tree.unflatten(jax.tree.structure(model_1), mix(items))


def toonify_y(x: int, blend_width: float | None) -> float:
    """JP's share of model_2 at position offset x: the `x > 1` hard rule or the logistic in positions."""
    if blend_width is None:
        return 1.0 if x > 1 else 0.0
    e = -x / blend_width
    return 0.0 if e > 700 else 1.0 / (1.0 + math.exp(e))      # JP's formula; the guard only avoids overflow
