"""The arithmetic behind interp.blend: per-leaf weighted sums, picks and whole-leaf selections.

A blend is planned in Python (which parent each leaf comes from, with which weights); leaves that come whole from
one parent are returned as they are, the rest are computed in one jitted call.
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nets import paths


class BlendError(ValueError):
    """The trees or the blend settings do not fit together; the message names the key path or value."""


def is_static(w) -> bool:
    """A weight known at trace time (Python or numpy number), as opposed to a (traced) jax array."""
    return isinstance(w, numbers.Real) or (isinstance(w, np.ndarray) and w.ndim == 0)


@dataclasses.dataclass(frozen=True)
class Lerp:
    """Weights (1 - alpha, alpha) for a traced alpha: the complement is taken inside the compiled mix, as it is
    when a caller jits the whole blend (computed outside, XLA would fuse it into the loop only under jit)."""
    alpha: Any


def _weighted(xs: tuple, ws: tuple) -> jax.Array:
    """sum_i ws[i] * xs[i] in (at least) float32, cast back to the leaf dtype."""
    acc = jnp.promote_types(xs[0].dtype, jnp.float32)
    y = xs[0].astype(acc) * ws[0]
    for x, w in zip(xs[1:], ws[1:]):
        y = y + x.astype(acc) * w
    return y.astype(xs[0].dtype)


def _picked(xs: tuple, ws: tuple) -> jax.Array:
    """The first parent with the largest (traced) weight."""
    out, best = xs[0], ws[0]
    for x, w in zip(xs[1:], ws[1:]):
        take = w > best
        out, best = jnp.where(take, x, out), jnp.where(take, w, best)
    return out


@functools.partial(jax.jit, static_argnames="kinds")
def _mix_all(xs: tuple, ws: tuple, kinds: tuple[str, ...]) -> tuple:
    """Every computed leaf of one blend in one compiled call. kinds[i]: 'sum' (ws[i] = one weight per parent),
    'lerp' / 'lerp_pick' (ws[i] = (alpha,)), 'pick' (traced weights, whole leaf from the largest).

    All weights are runtime values, so new alphas reuse the compiled code, and an eager call runs the same
    per-leaf expressions as a caller's jit of the whole blend: the results agree bit for bit (XLA:CPU always
    allows FMA contraction, so numpy, or a differently fused expression, may differ in the last bit).
    """
    out = []
    for x, w, kind in zip(xs, ws, kinds):
        if kind == "lerp":
            out.append(_weighted(x, (1 - w[0], w[0])))
        elif kind == "lerp_pick":
            out.append(jnp.where(w[0] > 1 - w[0], x[1], x[0]))
        elif kind == "pick":
            out.append(_picked(x, w))
        else:
            out.append(_weighted(x, w))
    return tuple(out)


def take_whole(xs: Sequence, ws: Sequence | Lerp, pick: bool):
    """The leaf when it comes whole from one parent with static weights (one-hot, or picked), else None."""
    if isinstance(ws, Lerp) or not all(is_static(w) for w in ws):
        return None
    ws = [float(w) for w in ws]
    if pick:
        return xs[int(np.argmax(ws))]
    hot = [i for i, w in enumerate(ws) if w != 0.0]
    return xs[hot[0]] if len(hot) == 1 and ws[hot[0]] == 1.0 else None    # one parent: as it is (no copy)


def mix(items: Sequence[tuple[paths.KeyPath, Sequence, Sequence, bool]]) -> list:
    """(path, parent leaves, weights, pick) per leaf -> the output leaves; the arithmetic in one jitted call."""
    out = [take_whole(xs, ws, pick) for _, xs, ws, pick in items]
    todo = [i for i, x in enumerate(out) if x is None]
    xs, ws, kinds = [], [], []
    for i in todo:
        path, leaves, w, pick = items[i]
        dtype = getattr(leaves[0], "dtype", None) or np.asarray(leaves[0]).dtype
        if not pick and not jnp.issubdtype(dtype, jnp.inexact):
            raise BlendError(f"cannot interpolate '{paths.path_str(path)}' ({np.dtype(dtype).name}); only a hard "
                             f"swap can move non-float leaves")
        lerp = isinstance(w, Lerp)
        if not lerp and all(is_static(v) for v in w):
            # Terms in order of weight: swapping the parents (with 1 - alpha) then builds the same expression,
            # so it rounds the same way even where XLA fuses a product and the sum into one FMA.
            order = sorted(range(len(w)), key=lambda k: float(w[k]))
            leaves, w = [leaves[k] for k in order], [float(w[k]) for k in order]
        xs.append(tuple(alias(x) for x in leaves))
        ws.append((w.alpha,) if lerp else tuple(w))
        kinds.append(("lerp_pick" if pick else "lerp") if lerp else ("pick" if pick else "sum"))
    if todo:
        for i, y in zip(todo, _mix_all(tuple(xs), tuple(ws), tuple(kinds))):
            out[i] = np.asarray(y) if isinstance(items[i][1][0], np.ndarray) else y   # numpy in, numpy out
    return out


def alias(x):
    """Host (numpy) leaves, e.g. of a loaded model file, are aliased rather than copied where the backend allows
    (CPU, 64-byte aligned): a blend of two 120 MB models then needs little more than the output's memory."""
    return jax.device_put(x, may_alias=True) if isinstance(x, np.ndarray) else x
