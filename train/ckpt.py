"""Training checkpoints (orbax CheckpointManager), model-file exports, and `--init-from` loading, for any family.

A checkpoint `<workdir>/ckpt/<step>/` holds three items: `state` (the recipe's state as a plain tree of arrays),
`data` (the input iterator position, JSON) and `config` (the TrainConfig, JSON). orbax writes each step into a
temporary directory and renames it into place when complete, so a process killed during a save leaves at most
a temporary directory that `latest_step` ignores (and the next manager removes): the latest checkpoint is
always a complete one. Restores use abstract targets that carry shardings, so arrays land where the step
wants them (orbax's documented way to restore onto a mesh).

The export `<workdir>/ema` is the gafu model file the recipe publishes (nets.modelfile), the file that
`gafu blend` / `gafu sample` read.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from nets import modelfile
from train.config import TrainConfig

PyTree = Any


def _ocp():
    import orbax.checkpoint as ocp  # deferred: ~0.2 s import
    return ocp


class CheckpointUnreadable(ValueError):
    """A checkpoint whose files cannot be read (truncated, corrupt, missing pieces)."""


def _drop_abandoned_orbax_reads() -> None:
    """After a failed restore orbax leaves its other pending reads as coroutines that are never awaited; their
    finalisation would print pages of TensorStore specs after our one-line message, and TensorStore's late
    completions of those reads call back into orbax's event loop, already closed ("Event loop is closed", dozens of
    tracebacks). Filter exactly those two out of sys.unraisablehook (installed once; everything else still reaches
    the previous hook)."""
    prev = sys.unraisablehook
    if getattr(prev, "drops_orbax_reads", False):
        return

    def hook(unraisable) -> None:
        obj = getattr(unraisable, "object", None)
        code = getattr(obj, "cr_code", None)
        if code is not None and "orbax" in code.co_filename:
            return
        exc = getattr(unraisable, "exc_value", None)
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        prev(unraisable)
    hook.drops_orbax_reads = True
    sys.unraisablehook = hook


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


class Checkpoints:
    """The training-state checkpoints of one workdir (`<workdir>/ckpt`), keeping the last `keep`."""

    def __init__(self, directory: str | Path, keep: int = 3):
        ocp = _ocp()
        self.directory = Path(directory).absolute()
        self.mngr = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                                 cleanup_tmp_directories=True))

    def latest_step(self) -> int | None:
        return self.mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.mngr.all_steps())

    def save(self, step: int, state: Any, data_state: dict, cfg: TrainConfig) -> None:
        """Start an asynchronous save (device arrays are copied before this returns)."""
        ocp = _ocp()
        self.mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state_to_tree(state)), data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(cfg.to_dict())))

    def read_config(self, step: int | None = None) -> dict:
        ocp = _ocp()
        step = self.latest_step() if step is None else step
        try:
            return self.mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
        except Exception as e:  # noqa: BLE001
            raise CheckpointUnreadable(f"{self.directory / str(step)}: its config: {type(e).__name__}: "
                                       f"{_first_line(e)}") from e

    def restore(self, template: Any, sharding: jax.sharding.Sharding,
                step: int | None = None) -> tuple[Any, dict, dict]:
        """(state, data position, config dict) of `step` (default: the latest), arrays placed on `sharding`.
        `template` may be abstract (`abstract_state`)."""
        ocp = _ocp()
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                state_to_tree(template))
        self.check_structure(template, step)
        _drop_abandoned_orbax_reads()               # before the read: TensorStore's late callbacks can come first
        try:
            r = self.mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 - the structure fits, so this is a read failure
            raise CheckpointUnreadable(f"{self.directory / str(step)}: {type(e).__name__}: {_first_line(e)}"
                                       ) from None
        if not all(np.all(np.isfinite(np.asarray(x.addressable_data(0)))) for x in jax.tree.leaves(r.state)):
            raise CheckpointUnreadable(f"{self.directory / str(step)}: holds non-finite values")
        return tree_to_state(template, r.state), r.data, r.config

    def check_structure(self, template: Any, step: int) -> None:
        """Raise CheckpointUnreadable if the saved state's metadata cannot be read, and ValueError (not the
        checkpoint's fault) if it holds other key paths, shapes or dtypes than `template` (the code changed)."""
        ocp = _ocp()
        where = self.directory / str(step)
        try:
            meta = ocp.StandardCheckpointer().metadata(where / "state").item_metadata
            got = {jax.tree_util.keystr(p): (tuple(m.shape), np.dtype(m.dtype).name)
                   for p, m in jax.tree_util.tree_flatten_with_path(meta)[0]}
        except Exception as e:  # noqa: BLE001 - orbax and TensorStore raise many types
            raise CheckpointUnreadable(f"{where}: {type(e).__name__}: {_first_line(e)}") from e
        want = {jax.tree_util.keystr(p): (tuple(x.shape), np.dtype(x.dtype).name)
                for p, x in jax.tree_util.tree_flatten_with_path(state_to_tree(template))[0]}
        diff = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
        if diff:
            raise ValueError(f"checkpoint {where} holds a state this code does not build ({len(diff)} differences, "
                             f"e.g. {diff[0]}: saved {got.get(diff[0])}, expected {want.get(diff[0])})")

    def set_aside(self, step: int) -> Path:
        """Move an unreadable checkpoint out of the manager's way (to `<workdir>/ckpt-unreadable/`), never
        deleting it, so that the user can inspect it."""
        src = self.directory / str(step)
        dst = self.directory.parent / "ckpt-unreadable" / f"{step}-{int(time.time())}"
        dst.parent.mkdir(exist_ok=True)
        os.rename(src, dst)
        self.mngr.reload()
        return dst

    def wait(self) -> None:
        self.mngr.wait_until_finished()

    def close(self) -> None:
        self.mngr.wait_until_finished()
        self.mngr.close()


def state_to_tree(state: Any) -> dict:
    """A plain nested dict (for orbax): flax.struct dataclasses and optax NamedTuples become dicts."""
    return flax.serialization.to_state_dict(state)


def tree_to_state(template: Any, tree: dict) -> Any:
    return flax.serialization.from_state_dict(template, tree)


def abstract_state(cfg: TrainConfig) -> Any:
    """Shapes and dtypes of the state of `cfg`'s family with `cfg`'s hparams (no arrays are made)."""
    return jax.eval_shape(lambda: cfg.recipe.init(cfg.hparams, jax.random.key(0), None)[1])


def export(path: str | Path, cfg: TrainConfig, state: Any, step: int, fixed: dict | None = None) -> Path:
    """Write the recipe's published model file (atomically; replaces an older export). `state` is on the host.
    Called by one process (the first) in multi-process runs; `fixed` is the run's first batch (host)."""
    variables, model_cfg, arch = cfg.recipe.export(cfg.hparams, state, fixed)
    meta = {"source": "gafu train", "family": cfg.family, "step": int(step),
            "kimg": round(step * cfg.batch / 1000, 3), "init_from": cfg.init_from}
    return modelfile.save_model(path, jax.tree.map(np.asarray, variables), model_cfg, arch=arch, meta=meta,
                                overwrite=True)


# ----------------------------------------------------------------------------------------------------------------
# --init-from


def check_fits(name: str, got: PyTree, want: PyTree, where: str) -> None:
    """Same key paths and shapes as a fresh init, else a ValueError listing the differences."""
    flat = lambda t: {jax.tree_util.keystr(p): tuple(np.shape(x))                       # noqa: E731
                      for p, x in jax.tree_util.tree_flatten_with_path(t)[0]}
    g, w = flat(got), flat(want)
    problems = [f"missing {k}" for k in sorted(set(w) - set(g))] + \
               [f"unexpected {k}" for k in sorted(set(g) - set(w))] + \
               [f"{k}: shape {g[k]} != {w[k]}" for k in sorted(set(g) & set(w)) if g[k] != w[k]]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ValueError(f"{where}: {name} does not fit the configured model: {'; '.join(problems[:8])}{more}")


def read_pretrained(path: str | Path) -> modelfile.ModelFile:
    """What `--init-from` names, as a model file: a gafu model file as it is, or a training workdir's latest
    checkpoint turned into every network its recipe trains (e.g. StyleGAN2's G, D and G_ema)."""
    p = Path(path).absolute()
    if (p / "gafu.json").is_file():
        return modelfile.load_model(p)
    if not (p / "ckpt").is_dir():
        raise FileNotFoundError(f"--init-from {p}: not a gafu model file (no gafu.json) nor a training workdir "
                                f"(no ckpt/)")
    ck = Checkpoints(p / "ckpt")
    try:
        step = ck.latest_step()
        if step is None:
            raise FileNotFoundError(f"--init-from {p}: the workdir has no complete checkpoint")
        src = TrainConfig.from_dict(ck.read_config(step))
        dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        state, _, _ = ck.restore(abstract_state(src), dev, step)
    finally:
        ck.close()
    variables, model_cfg, arch = src.recipe.networks(src.hparams, jax.tree.map(np.asarray, state))
    return modelfile.ModelFile(variables=variables, config=model_cfg.to_dict(), arch=arch,
                               meta={"source": "gafu train", "step": step}, path=p)
