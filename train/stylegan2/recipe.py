"""StyleGAN2's Recipe: what the generic training core calls (see train/recipe.py for the contract)."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from nets import images, modelfile, registry
from nets.stylegan2 import StyleGAN2Config, init_discriminator, init_generator
from train.ckpt import check_fits
from train.recipe import MetricSpec, Recipe
from train.stylegan2.config import PRESETS, Hparams
from train.stylegan2.state import TrainState, init_state
from train.stylegan2.step import device_step, due_phases

ARCH = "stylegan2"


def features(hp: Hparams) -> dict[str, tuple[str, str]]:
    return {"image": (hp.split, "image")}


def example_shapes(hp: Hparams) -> dict[str, tuple[int, ...]]:
    m = hp.model
    return {"image": (m.resolution, m.resolution, m.img_channels)}


def check_batch(hp: Hparams, n: int) -> None:
    """Each device must hold whole minibatch-stddev groups (then 1 device == N devices exactly)."""
    g = min(hp.model.mbstd_group_size, n)
    if n % g:
        raise ValueError(f"{n} samples per device is not a multiple of the minibatch-stddev group {g}; change "
                         f"batch or model.mbstd_group_size")


def init(hp: Hparams, key: jax.Array, pretrained: modelfile.ModelFile | None = None
         ) -> tuple[Hparams, TrainState, str]:
    """A fresh state, or one that starts from a pretrained G (+ D, + EMA); its model config wins."""
    if pretrained is None:
        return hp, init_state(hp, key), ""
    where = f"--init-from {pretrained.path}"
    v = pretrained.variables
    arch = registry.get(pretrained.arch)
    if arch.name != ARCH or arch.generator not in v:
        raise ValueError(f"{where}: holds no StyleGAN2 generator 'G' (arch {pretrained.arch!r}, entries "
                         f"{sorted(v)})")
    model = arch.config_cls.from_dict(pretrained.config)
    hp = dataclasses.replace(hp, model=model)
    g, d, ema = dict(v["G"]), v.get("D"), v.get("G_ema")
    parts = ["G"] + (["D"] if d is not None else []) + (["EMA"] if ema is not None else [])
    note = f"init from {pretrained.path} ({', '.join(parts)}{'' if d is not None else '; D freshly initialised'})"
    if "buffers" not in g:
        note += "; G had no buffers (w_avg, noise maps): fresh ones used"
        g = {"params": g["params"], "buffers": init_generator(model, key)["buffers"]}
    fresh_g = jax.eval_shape(lambda: init_generator(model, jax.random.key(0)))
    check_fits("G", g, fresh_g, where)
    if ema is not None:
        check_fits("G_ema", ema, fresh_g, where)
    if d is not None:
        d = {"params": d["params"]}
        check_fits("D", d, jax.eval_shape(lambda: init_discriminator(model, jax.random.key(0))), where)
    return hp, init_state(hp, key, g, d, ema), note


def published(hp: Hparams, state: TrainState) -> dict:
    """The EMA generator's variables: what the sample grids show and the model file holds."""
    return state.g_ema


def sample(hp: Hparams, g_ema: dict, fixed: dict, num: int) -> np.ndarray:
    """The EMA generator on seeds 0..num-1 with constant noise, as one grid."""
    return images.make_grid(registry.get(ARCH).sample(hp.model, g_ema, range(num), noise_mode="const"))


def export(hp: Hparams, g_ema: dict, fixed: dict | None = None) -> tuple[dict, StyleGAN2Config, str]:
    """The published model file: the EMA generator (the one `gafu blend` / `gafu sample` read)."""
    return {"G": g_ema}, hp.model, ARCH


def networks(hp: Hparams, state: TrainState) -> tuple[dict, StyleGAN2Config, str]:
    """Everything trained, for fine-tuning from a workdir: G, D and the G EMA."""
    return {"G": state.g, "D": state.d, "G_ema": state.g_ema}, hp.model, ARCH


RECIPE = Recipe(
    family=ARCH, hparams=Hparams, presets=PRESETS, features=features, example_shapes=example_shapes,
    check_batch=check_batch, init=init, step=device_step, published=published, sample=sample, export=export,
    networks=networks, due=due_phases,
    metrics=MetricSpec(progress={"G": "loss/G", "D": "loss/D", "p": "ada/p"},
                       gated={"reg/pl": "did_g_reg", "reg/r1": "did_d_reg"},
                       latest=("pl_mean", "ada/p", "ada/rt"), hidden=("finite", "did_g_reg", "did_d_reg")))
