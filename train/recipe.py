"""The seam between the generic training core and a model family: the `Recipe` record, and the family table.

The core (train/config.py, loop.py, ckpt.py, logs.py, parallel.py) knows run-level things only: data, batch, steps,
seed, device mapping, intervals. Everything about a model family comes through one `Recipe`, a plain record of
functions that the core calls and never looks behind. `H` below is the family's hyperparameter section (a frozen
dataclass: model config, losses, optimiser, EMA, augmentation, fine-tuning; hashable, so it keys the compiled step),
`S` its training state (a pytree, e.g. a flax.struct dataclass; the core only stores and restores it).

Contract of each function (`host` values are numpy trees, `device` values live on the mesh):

  features(h) -> {batch key: (split, feature)}   what the input pipeline must serve: StyleGAN2
        {"image": ("train", "image")}, a translation model {"A": ("trainA", "image"), "B": ("trainB", "image")}.
  example_shapes(h) -> {batch key: shape}        one example's shape per key ([R,R,C]); checked against the data
        before anything is compiled.
  check_batch(h, n) -> None                       raise ValueError if n samples per device cannot work (groups).
  init(h, key, pretrained) -> (h', state, note)   a fresh state from a PRNG key; with `pretrained` (a
        nets.modelfile.ModelFile: a model file, or the `networks` of another run) start from its weights. h' may
        differ from h only in the fields named by `init_fields` (the model config comes with the weights).
  step(h, state, batch, seed, frozen) -> (state, metrics) ONE device's step, in the pmap programming model: batch
        {key: [n, ...]} is this device's shard, state is replicated, collectives run over the axis
        `train.parallel.AXIS`; `seed` is the run's seed (uint32 []), randomness must be a function of (seed,
        state's step, global sample index) so that 1 device == N devices and resume is exact. `frozen` is what
        `frozen(h)` returned, replicated (None for most families). Metrics are scalars, averaged over the axis, and
        include "finite" (every loss and parameter finite). A family with lazy phases (`due` below) takes a keyword
        `due`: the names of the phases to run, fixed when the step is traced, or None to decide on the device from
        the state's step (train.steps.lazy_phase).
  due(h, step) -> tuple of names                 the lazy phases (regularisers run every k steps, e.g. R1) that
        run at a step number; None (the default) for a family without any. The core then compiles one step per
        pattern of due phases (TrainConfig.lazy_dispatch 'host') or one with lax.cond branches ('device').
  frozen(h) -> pytree | None                      fixed networks the step reads but never trains (a perceptual
        loss's VGG), loaded once per run from a file or an installed package; never checkpointed.
  published(h, state) -> pytree                  the part of the (device) state that sample and export read,
        e.g. StyleGAN2's EMA generator: the core fetches only this to the host, once per sample/export step.
  sample(h, published, fixed, num) -> uint8 [H,W,C]  a preview grid from the host copy of `published`; `fixed`
        is this process's first batch of the run ({key: [N, ...]}), for families that translate or paint inputs.
  export(h, published, fixed) -> (variables, model config, arch)   the model file a run publishes
        (nets.modelfile); `fixed` as in `sample` (a conditional family keeps a few of its inputs as previews).
  networks(h, state) -> (variables, model config, arch)     every trained network of a host state, for
        fine-tuning from a training workdir (`--init-from runs/x`).
  metrics: MetricSpec                             how the core summarises and shows the step's metrics.

To add a family: write train/<family>/ (hparams + presets, state, step, recipe) and add one line to FAMILIES.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

# family name -> module defining RECIPE (imported on use)
FAMILIES = {"stylegan2": "train.stylegan2.recipe", "spade": "train.spade.recipe", "gnr": "train.gnr.recipe"}


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """How per-step metrics are summarised for a log line (the mean over the steps since the last line, except):"""
    progress: Mapping[str, str] = dataclasses.field(default_factory=dict)  # bar label -> metric
    gated: Mapping[str, str] = dataclasses.field(default_factory=dict)   # metric -> flag: mean over flagged steps
    latest: tuple[str, ...] = ()                     # running values (EMA means, probabilities): the last one
    hidden: tuple[str, ...] = ("finite",)            # flags and checks that are not logged


@dataclasses.dataclass(frozen=True)
class Recipe:
    family: str
    hparams: type                                    # the section dataclass H
    presets: Mapping[str, Callable[[], Any]]         # preset name -> TrainConfig
    features: Callable[[Any], Mapping[str, tuple[str, str]]]
    example_shapes: Callable[[Any], Mapping[str, tuple[int, ...]]]
    check_batch: Callable[[Any, int], None]
    init: Callable[..., tuple[Any, Any, str]]
    step: Callable[..., tuple[Any, dict]]
    published: Callable[[Any, Any], Any]
    sample: Callable[..., Any]
    export: Callable[[Any, Any], tuple[dict, Any, str]]
    networks: Callable[[Any, Any], tuple[dict, Any, str]]
    metrics: MetricSpec
    init_fields: tuple[str, ...] = ("model",)
    frozen: Callable[[Any], Any] = lambda h: None
    due: Callable[[Any, int], tuple[str, ...]] | None = None


def get(family: str) -> Recipe:
    """The recipe of a family name (as written in a config's "family")."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[family]).RECIPE


def all_recipes() -> list[Recipe]:
    return [get(f) for f in FAMILIES]
