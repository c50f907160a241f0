"""Mapping the per-device step over devices: `jax.pmap` or `jax.shard_map` over a one-axis mesh.

Both run the same `device_step` (written with collectives over axis 'data'). The state is replicated and goes
in and out whole (pmap in_axes/out_axes None, shard_map P()); the batch is split on its leading axis. shard_map
runs with check_vma=False so that `pmean(grad(local loss))` means what it means under pmap (with check_vma the
cotangent of a replicated input is psum'ed automatically; jax_ecosystem.md §2(a), Gotcha 1).

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

from train.config import TrainConfig
from train.step import AXIS, device_step

PyTree = Any
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
    """A 1-axis mesh ('data',) with the Auto axis type (jax.sharding.Mesh's default; make_mesh's Explicit
    default breaks minibatch-stddev's reshape, Gotcha 2)."""
    return Mesh(np.asarray(list(devices if devices is not None else jax.devices())), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


@functools.lru_cache(maxsize=16)
def build_step(cfg: TrainConfig, mode: str, devices: tuple[jax.Device, ...]) -> Callable:
    """The mapped step `(state, batch) -> (state, metrics)`, built once per (static config, mode, devices).

    pmap takes the batch as [num_local_devices, n, R, R, C]; shard_map as a global [N, R, R, C] array sharded
    over 'data' (see `put_batch`). Cached so that runs in one process (tests, resume) reuse the executable.
    """
    fn = functools.partial(device_step, cfg)
    if mode == "pmap":
        all_devices = tuple(jax.devices())
        return jax.pmap(fn, axis_name=AXIS, in_axes=(None, 0), out_axes=None,
                        devices=None if devices == all_devices else list(devices))
    if mode == "shard_map":
        mapped = jax.shard_map(fn, mesh=make_mesh(devices), in_specs=(P(), P(AXIS)), out_specs=(P(), P()),
                               check_vma=False)
        return jax.jit(mapped)
    raise ValueError(f"parallel mode must be one of {MODES}; got {mode!r}")


def put_batch(local: np.ndarray, mesh: Mesh, mode: str) -> Any:
    """This process's rows [num_local_devices, n, ...] -> the step's input for `mode`."""
    if mode == "pmap":
        return local
    flat = local.reshape((-1,) + local.shape[2:])                                  # [L*n, R, R, C]
    return jax.make_array_from_process_local_data(batch_sharding(mesh), flat)


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
