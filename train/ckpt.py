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
        return self.mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config

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
        try:
            r = self.mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot restore checkpoint {self.directory / str(step)} into the configured "
                             f"model/optimiser (did the config change?): {e}") from e
        return tree_to_state(template, r.state), r.data, r.config

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


def export(path: str | Path, cfg: TrainConfig, state: Any, step: int) -> Path:
    """Write the recipe's published model file (atomically; replaces an older export). `state` is on the host.
    Called by one process (the first) in multi-process runs."""
    variables, model_cfg, arch = cfg.recipe.export(cfg.hparams, state)
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
