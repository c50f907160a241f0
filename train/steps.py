"""Small pieces every family's per-device step uses: masked flat Adam with a cross-device mean, the finiteness
check, per-sample keys that do not depend on how the batch is split over devices, and lazy phases."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from train.parallel import AXIS

Array = jax.Array
PyTree = Any
T = TypeVar("T")


def mask_grads(grads: PyTree, trainable: PyTree) -> PyTree:
    """Zero gradients of frozen leaves. With zero gradients from step 0 on, Adam's first moment stays 0, so the
    update of a frozen leaf is exactly 0; XLA drops the unused weight-gradient computations."""
    return jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trainable)


def adam_step(tx: optax.GradientTransformation, grads: PyTree, opt: PyTree, params: PyTree,
              mask: PyTree | None = None) -> tuple[PyTree, PyTree]:
    """One optimiser update on flat vectors, gradients averaged over the data axis: one all-reduce and a few fused
    kernels instead of several per leaf (which also cuts compile time). Frozen leaves (mask False) are zeroed on
    the tree first, so XLA drops their weight gradients."""
    flat_g, _ = ravel_pytree(grads if mask is None else mask_grads(grads, mask))
    flat_p, unravel = ravel_pytree(params)
    updates, opt = tx.update(lax.pmean(flat_g, AXIS), opt, flat_p)
    return unravel(optax.apply_updates(flat_p, updates)), opt


def all_finite(*trees) -> Array:
    """True when every leaf of every tree is finite (one reduction per leaf)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trees)]
    return jnp.all(jnp.stack(leaves))


def global_index(n: int) -> Array:
    """Global sample indices [n] of this device's shard: sample j on device d is j * num_devices + d (the
    interleaved layout of train.parallel), so per-sample randomness is the same on 1 or N devices."""
    return jnp.arange(n) * lax.axis_size(AXIS) + lax.axis_index(AXIS)


def sample_keys(seed: Array, step: Array, index: Array, streams: int) -> Array:
    """Keys [n, streams]: fold_in(fold_in(key(seed), step), index * streams + s) for each sample index."""
    step_key = jax.random.fold_in(jax.random.key(seed), step)
    data = (index[:, None] * streams + jnp.arange(streams)[None, :]).astype(jnp.uint32)        # [n,streams]
    return jax.vmap(jax.vmap(lambda i: jax.random.fold_in(step_key, i)))(data)


def due_phases(intervals: Mapping[str, int], step: int) -> tuple[str, ...]:
    """The names of the lazy phases due at a step number; intervals: name -> every k steps (0: never)."""
    return tuple(name for name, every in intervals.items() if every and step % every == 0)


def lazy_phase(name: str, every: int, due: tuple[str, ...] | None, step: Array, phase: Callable[[T], T],
               operand: T) -> tuple[T, Array]:
    """(phase(operand) if the lazy phase `name` (every `every` steps) is due else operand, float32 flag of whether
    it ran).

    due None: decided on the device from the state's `step` by `lax.cond`, so one program serves every step; a
    tuple (due_phases at this step): decided when the step is traced (train.loop's 'host' dispatch: one program
    per pattern of due phases). XLA:CPU leaves convolution gradients inside a conditional branch in their raw
    transposed forms, off its fast paths (jax-ml/jax#12868): an R1 branch ran 20-35x slower than the same code
    outside one."""
    if due is None:
        now = step % every == 0
        return lax.cond(now, phase, lambda o: o, operand), now.astype(jnp.float32)
    ran = name in due
    return (phase(operand) if ran else operand), jnp.float32(ran)
