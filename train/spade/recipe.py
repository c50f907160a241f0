"""SPADE's Recipe: what the generic training core calls (see train/recipe.py for the contract)."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from nets import images, modelfile, registry, spade, vgg
from nets.spade import SPADEConfig
from train.ckpt import check_fits
from train.recipe import MetricSpec, Recipe
from train.spade.config import PRESETS, Hparams
from train.spade.state import TrainState, init_state
from train.spade.step import device_step

ARCH = "spade"
NUM_PREVIEWS = 8          # conditions an export keeps (G/previews/cond) for `gafu sample` and the blend figure


def features(hp: Hparams) -> dict[str, tuple[str, str]]:
    return {"image": (hp.split, "image"), "cond": (hp.split, hp.cond_feature)}


def example_shapes(hp: Hparams) -> dict[str, tuple[int, ...]]:
    r = hp.model.resolution
    return {"image": (r, r, hp.model.img_channels), "cond": (r, r, hp.model.cond_channels)}


def check_batch(hp: Hparams, n: int) -> None:
    """Any per-device batch works (batch-norm statistics are taken over the whole, synchronised batch)."""


def init(hp: Hparams, key: jax.Array, pretrained: modelfile.ModelFile | None = None
         ) -> tuple[Hparams, TrainState, str]:
    """A fresh state, or one that starts from a model file's / workdir's G (+ D, + E); its model config wins."""
    if pretrained is None:
        return hp, init_state(hp, key), ""
    where = f"--init-from {pretrained.path}"
    v = pretrained.variables
    if pretrained.arch != ARCH or "G" not in v:
        raise ValueError(f"{where}: holds no SPADE generator 'G' (arch {pretrained.arch!r}, entries {sorted(v)})")
    hp = dataclasses.replace(hp, model=registry.get(ARCH).config_cls.from_dict(pretrained.config))
    shapes = jax.eval_shape(lambda: spade.init_model(hp.model, jax.random.key(0)))
    nets = {"G": spade.network_vars(v["G"])}
    nets.update({k: v[k] for k in ("D", "E") if k in v and k in shapes})
    for name, tree in nets.items():
        check_fits(name, tree, shapes[name], where)
    fresh = sorted(set(shapes) - set(nets))
    note = f"init from {pretrained.path} ({', '.join(nets)}{'; fresh ' + ', '.join(fresh) if fresh else ''})"
    return hp, init_state(hp, key, nets), note


def published(hp: Hparams, state: TrainState) -> dict:
    """G (with its running statistics) and E: what previews and the model file use (SPADE keeps no EMA)."""
    return {"G": state.g, "E": state.e}


def _conds(fixed: dict | None, num: int) -> np.ndarray | None:
    if not fixed or "cond" not in fixed:
        return None
    return images.to_uint8(np.asarray(fixed["cond"])[:num])


def sample(hp: Hparams, pub: dict, fixed: dict, num: int) -> np.ndarray:
    """Two rows: the run's first conditions, and G painting them (inference mode, seeds 0..)."""
    cond = _conds(fixed, num)
    painted = spade.paint(hp.model, pub["G"], cond, list(range(len(cond))))
    return images.make_grid(np.concatenate([cond[..., :3], painted]), rows=2)


def export(hp: Hparams, pub: dict, fixed: dict | None = None) -> tuple[dict, SPADEConfig, str]:
    """The model file: G with up to NUM_PREVIEWS of the run's conditions as previews (and E for the VAE)."""
    g = dict(pub["G"])
    cond = _conds(fixed, NUM_PREVIEWS)
    if cond is not None:
        g[spade.PREVIEWS] = {"cond": cond}
    out = {"G": g}
    if hp.model.vae:
        out["E"] = pub["E"]
    return out, hp.model, ARCH


def networks(hp: Hparams, state: TrainState) -> tuple[dict, SPADEConfig, str]:
    """Everything trained, for fine-tuning from a workdir: G, D (and E)."""
    out = {"G": state.g, "D": state.d}
    if hp.model.vae:
        out["E"] = state.e
    return out, hp.model, ARCH


def frozen(hp: Hparams) -> dict | None:
    """The perceptual loss's VGG (torchvision weights from loss.vgg, else the bundled VGG-16) with its dx kernels
    formed once (`vgg.with_dx_kernels`); None without the loss."""
    if not hp.loss.lambda_vgg:
        return None
    return vgg.with_dx_kernels(vgg.load_torchvision_vgg(hp.loss.vgg) if hp.loss.vgg else vgg.vgg16_imagenet_params())


RECIPE = Recipe(
    family=ARCH, hparams=Hparams, presets=PRESETS, features=features, example_shapes=example_shapes,
    check_batch=check_batch, init=init, step=device_step, published=published, sample=sample, export=export,
    networks=networks, frozen=frozen,
    metrics=MetricSpec(progress={"G": "loss/G", "D": "loss/D"}))
