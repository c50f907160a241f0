"""Generated images for the metrics, for every family in nets/registry.py, in fixed-size batches.

StyleGAN2: seeds 0..N-1 (nets.sampling's z per seed) rendered through one jitted program, batches split over the
local devices. Translation models (for them FID compares translations of held-out sources with that split's
targets): SPADE paints the rough (`cond_feature`) of source image i mod n with seed i; GANs N' Roses translates
source face i mod n under the prior style of seed i. Every batch is padded to one shape, so nothing recompiles for
the last one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from datasets.pipeline import open_split
from nets import gnr, images, registry, sampling, spade
from train.eval.stats import dataset_batches

# Default splits per family: (the reals' split, the sources' split or None), as the family's datasets name them
# (`gafu prepare-data paired` writes trainA/trainB/testA/testB; `folder` writes train).
DEFAULT_SPLITS = {"stylegan2": ("train", None), "spade": ("test", "test"), "gnr": ("testB", "testA")}
DIVERSITY_FAMILIES = ("spade", "gnr")     # models with sources, whose outputs vary with a style code or seed


@dataclasses.dataclass
class Model:
    path: str
    arch: registry.Arch
    cfg: Any
    g_vars: dict

    @property
    def family(self) -> str:
        return self.arch.name

    @property
    def resolution(self) -> int:
        return int(self.cfg.resolution)


def load(path: str) -> Model:
    arch, cfg, g_vars = registry.load_generator(path)
    return Model(str(path), arch, cfg, g_vars)


def _pad(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x, np.zeros((n - len(x),) + x.shape[1:], x.dtype)]) if len(x) < n else x


def stylegan2_batches(model: Model, num: int, batch: int, first_seed: int = 0) -> Iterator[np.ndarray]:
    """uint8 [<=batch,R,R,C] renders of seeds first_seed.. (truncation psi 1, const noise, as NV's metrics)."""
    devices = jax.local_devices()
    rows = NamedSharding(Mesh(np.asarray(devices), ("data",)), P("data"))
    fn = sampling.render_fn(model.cfg, 1.0, "const", "z")
    g_vars = jax.device_put(model.g_vars, NamedSharding(rows.mesh, P()))
    for i in range(0, num, batch):
        n = min(batch, num - i)
        z = _pad(sampling.z_from_seeds(range(first_seed + i, first_seed + i + n), model.cfg.z_dim), batch)
        img = fn(g_vars, jax.device_put(jnp.asarray(z), rows), None)
        yield images.to_uint8(img)[:n]


def _sources(data: Any, split: str, feature: str, num: int, batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first index, uint8 [<=batch,...] of `feature`) cycling through split's examples until `num`."""
    src = open_split(data, split)
    if len(src) == 0:
        raise ValueError(f"split {split!r} of {data} is empty: no sources to translate")
    for i in range(0, num, batch):
        idx = [j % len(src) for j in range(i, min(i + batch, num))]
        exs = [src[j] for j in idx]
        if feature not in exs[0]:
            raise ValueError(f"split {split!r} of {data} has no feature {feature!r} (it has {', '.join(exs[0])})")
        yield i, np.stack([np.asarray(e[feature]) for e in exs])


def spade_batches(model: Model, data: Any, split: str, num: int, batch: int,
                  feature: str = "sketch") -> Iterator[np.ndarray]:
    for i, cond in _sources(data, split, feature, num, batch):
        n = len(cond)
        seeds = list(range(i, i + batch))                       # a full batch always: one program
        yield spade.paint(model.cfg, model.g_vars, _pad(cond, batch), seeds)[:n]


def gnr_batches(model: Model, data: Any, split: str, num: int, batch: int) -> Iterator[np.ndarray]:
    for i, faces in _sources(data, split, "image", num, batch):
        n = len(faces)
        styles = gnr.styles_from_seeds(model.cfg, range(i, i + batch))[:, None]        # [batch,1,latent_dim]
        yield gnr.translate(model.cfg, model.g_vars, _pad(faces, batch), styles)[:n, 0]


def fake_batches(model: Model, num: int, batch: int, data: Any = None,
                 source_split: str | None = None) -> Iterator[np.ndarray]:
    """uint8 fakes [<=batch,R,R,C] of any family; translation models read their sources from `data`."""
    if model.family == "stylegan2":
        return stylegan2_batches(model, num, batch)
    split = source_split or DEFAULT_SPLITS[model.family][1]
    if data is None:
        raise ValueError(f"a {model.family} model translates sources: pass --data with a split {split!r}")
    if model.family == "spade":
        return spade_batches(model, data, split, num, batch)
    if model.family == "gnr":
        return gnr_batches(model, data, split, num, batch)
    raise ValueError(f"gafu eval does not know how to generate from a {model.family!r} model")


def diversity_batches(model: Model, data: Any, sources: int, styles: int,
                      source_split: str | None = None, batch: int = 8) -> Iterator[np.ndarray]:
    """uint8 [styles,R,R,C] per source, for the first `sources` sources of the split (cycling when it has fewer):
    source i under the style (GNR) or noise/z (SPADE) seeds i*styles .. i*styles + styles - 1."""
    if model.family not in DIVERSITY_FAMILIES:
        raise ValueError(f"LPIPS diversity needs a model with sources; {model.path} is a {model.family} model")
    split = source_split or DEFAULT_SPLITS[model.family][1]
    if data is None:
        raise ValueError(f"a {model.family} model translates sources: pass --data with a split {split!r}")
    feature = "image" if model.family == "gnr" else "sketch"
    for i, src in _sources(data, split, feature, sources, batch):
        n = len(src)
        seeds = np.arange(i * styles, (i + batch) * styles)                     # a full batch always: one program
        if model.family == "gnr":
            codes = gnr.styles_from_seeds(model.cfg, seeds).reshape(batch, styles, -1)
            out = gnr.translate(model.cfg, model.g_vars, _pad(src, batch), codes)           # [batch,S,R,R,3]
        else:
            cond = np.repeat(_pad(src, batch), styles, axis=0)                              # [batch*S,...]
            out = spade.paint(model.cfg, model.g_vars, cond, seeds.tolist())
            out = out.reshape(batch, styles, *out.shape[1:])
        yield from out[:n]


def real_batches(data: Any, split: str, num: int, batch: int) -> Iterator[np.ndarray]:
    return dataset_batches(open_split(data, split), num, batch)
