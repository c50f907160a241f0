"""Training checkpoints (orbax CheckpointManager), EMA model-file exports, and `--init-from` loading.

A checkpoint `<workdir>/ckpt/<step>/` holds three items: `state` (TrainState as a plain tree of arrays),
`data` (the input iterator position, JSON) and `config` (the TrainConfig, JSON). orbax writes each step into a
temporary directory and renames it into place when complete, so a process killed during a save leaves at most
a temporary directory that `latest_step` ignores (and the next manager removes): the latest checkpoint is
always a complete one. Restores use abstract targets that carry shardings (jax_ecosystem.md §2(c), Gotcha 1).

The EMA export `<workdir>/ema` is a gafu model file {"G": EMA variables} (nets.modelfile), the file that
`gafu blend` / `gafu sample` read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from nets import modelfile
from nets.stylegan2 import StyleGAN2Config, init_discriminator, init_generator
from train.config import TrainConfig
from train.state import TrainState, init_state, state_to_tree, tree_to_state

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

    def save(self, step: int, state: TrainState, data_state: dict, cfg: TrainConfig) -> None:
        """Start an asynchronous save (device arrays are copied before this returns)."""
        ocp = _ocp()
        self.mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state_to_tree(state)), data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(cfg.to_dict())))

    def read_config(self, step: int | None = None) -> dict:
        ocp = _ocp()
        step = self.latest_step() if step is None else step
        return self.mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config

    def restore(self, template: TrainState, sharding: jax.sharding.Sharding,
                step: int | None = None) -> tuple[TrainState, dict, dict]:
        """(state, data position, config dict) of `step` (default: the latest), arrays placed on `sharding`.
        `template` may be abstract (jax.eval_shape of init_state)."""
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


def abstract_state(cfg: TrainConfig) -> TrainState:
    return jax.eval_shape(lambda: init_state(cfg, jax.random.key(0)))


def export_ema(path: str | Path, ema: PyTree, cfg: TrainConfig, step: int) -> Path:
    """Write the EMA generator as a gafu model file (atomically; replaces an older export). Called by one
    process (the first) in multi-process runs."""
    meta = {"source": "gafu train", "step": int(step), "kimg": round(step * cfg.batch / 1000, 3),
            "init_from": cfg.finetune.init_from}
    return modelfile.save_model(path, {"G": jax.tree.map(np.asarray, ema)}, cfg.model, arch="stylegan2",
                                meta=meta, overwrite=True)


# ----------------------------------------------------------------------------------------------------------------
# --init-from


def _check_tree(name: str, got: PyTree, want: PyTree, where: str) -> None:
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


def load_init(path: str, cfg: TrainConfig) -> tuple[TrainConfig, dict, dict | None, dict | None, str]:
    """Variables to fine-tune from: a gafu model file (G and optionally D; its model config wins) or a
    training workdir (G, D and EMA of its latest checkpoint). Returns (cfg with that model config, G vars,
    D vars or None, EMA vars or None, a one-line note for the log)."""
    p = Path(path)
    if (p / "gafu.json").is_file():
        mf = modelfile.load_model(p)
        if mf.arch != "stylegan2" or "G" not in mf.variables:
            raise ValueError(f"--init-from {p}: holds no StyleGAN2 generator 'G' (arch {mf.arch!r}, "
                             f"entries {sorted(mf.variables)})")
        model = StyleGAN2Config.from_dict(mf.config)
        g, d, ema = dict(mf.variables["G"]), mf.variables.get("D"), None
        note = f"init from model file {p} (G{' + D' if d is not None else '; D freshly initialised'})"
    elif (p / "ckpt").is_dir():
        ck = Checkpoints(p / "ckpt")
        try:
            src = TrainConfig.from_dict(ck.read_config())
            dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            st, _, _ = ck.restore(abstract_state(src), dev)
        finally:
            ck.close()
        model, g, d, ema = src.model, st.g, st.d, st.g_ema
        note = f"init from training workdir {p} (step {int(st.step)}: G, D and EMA)"
    else:
        raise FileNotFoundError(f"--init-from {p}: not a gafu model file (no gafu.json) nor a training workdir "
                                f"(no ckpt/)")
    cfg = cfg.replace(model=model)
    fresh_g = jax.eval_shape(lambda: init_generator(model, jax.random.key(0)))
    if "buffers" not in g:
        note += "; G had no buffers (w_avg, noise maps): fresh ones used"
        g = {"params": g["params"], "buffers": init_generator(model, jax.random.key(cfg.seed))["buffers"]}
    _check_tree("G", g, fresh_g, f"--init-from {p}")
    if d is not None:
        _check_tree("D", {"params": d["params"]},
                    jax.eval_shape(lambda: init_discriminator(model, jax.random.key(0))), f"--init-from {p}")
    return cfg, g, d, ema, note
