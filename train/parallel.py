"""Mapping a recipe's per-device step over devices: `jax.pmap` or `jax.shard_map` over a one-axis mesh.

Both run the same step function (written with collectives over the axis `AXIS`). The state and the seed are
replicated and go in and out whole (pmap in_axes/out_axes None, shard_map P()); every entry of the batch dict is
split on its leading axis. shard_map runs with check_vma=False so that `pmean(grad(local loss))` means what it
means under pmap: with check_vma the cotangent of a replicated input is psum'ed automatically (JAX's shard_map
documentation, "Automatic differentiation" with varying manual axes).

Multi-host: call `init_distributed` first in every process; `jax.devices()` is then the global device list,
each process feeds its own rows (pmap: [local_devices, n, ...]; shard_map: assembled with
`make_array_from_process_local_data`), and the collectives cross processes.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any
AXIS = "data"                 # the data-parallel axis every step's collectives run over
MODES = ("shard_map", "pmap")


def init_distributed(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, cpu_collectives: str = "gloo") -> None:
    """jax.distributed.initialize; with no arguments JAX detects TPU pods / SLURM / Open MPI by itself.
    On CPU the cross-process collectives need an implementation (gloo); set it before the backend starts."""
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    kw = {k: v for k, v in dict(coordinator_address=coordinator, num_processes=num_processes,
                                process_id=process_id).items() if v is not None}
    jax.distributed.initialize(**kw)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-axis mesh ('data',) with the Auto axis type (jax.sharding.Mesh's default: jax.make_mesh's Explicit
    axes would make minibatch-stddev's group reshape of a sharded batch an error)."""
    return Mesh(np.asarray(list(devices if devices is not None else jax.devices())), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


@functools.lru_cache(maxsize=16)
def build_step(step: Callable, hparams: Any, mode: str, devices: tuple[jax.Device, ...],
               due: tuple[str, ...] | None = None) -> Callable:
    """The mapped step `(state, batch, seed, frozen) -> (state, metrics)` of `step(hparams, state, batch, seed,
    frozen[, due=due])`, built once per (step function, hparams, mode, devices, due): the compiled program depends
    on the family section and, for a family with lazy phases, on which of them it runs (None: all, as lax.cond
    branches decided on the device; see train.recipe).

    pmap takes each batch entry as [num_local_devices, n, ...]; shard_map as a global [N, ...] array sharded over
    'data' (see `put_batch`). Cached so that runs in one process (tests, resume, the demo) reuse the executable.
    """
    fn = functools.partial(step, hparams) if due is None else functools.partial(step, hparams, due=due)
    if mode == "pmap":
        all_devices = tuple(jax.devices())
        return jax.pmap(fn, axis_name=AXIS, in_axes=(None, 0, None, None), out_axes=None,
                        devices=None if devices == all_devices else list(devices))
    if mode == "shard_map":
        mapped = jax.shard_map(fn, mesh=make_mesh(devices), in_specs=(P(), P(AXIS), P(), P()), out_specs=(P(), P()),
                               check_vma=False)
        return jax.jit(mapped)
    raise ValueError(f"parallel mode must be one of {MODES}; got {mode!r}")


def put_batch(local: PyTree, mesh: Mesh, mode: str) -> PyTree:
    """This process's rows {key: [num_local_devices, n, ...]} -> the step's input for `mode`."""
    if mode == "pmap":
        return local
    sharding = batch_sharding(mesh)

    def put(x):
        flat = np.reshape(x, (-1,) + np.shape(x)[2:])                               # [L*n, ...]
        return jax.make_array_from_process_local_data(sharding, flat)
    return jax.tree.map(put, local)


def put_replicated(tree: PyTree, mesh: Mesh) -> PyTree:
    """Host values (identical in every process) -> arrays replicated over the whole (possibly global) mesh."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    return jax.tree.map(put, tree)


def to_host(tree: PyTree) -> PyTree:
    """Replicated arrays -> numpy, reading this process's first local copy (works for multi-host arrays)."""
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree.map(get, tree)
