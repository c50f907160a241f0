"""Shared by the train tests and their subprocess workers: one tiny config (so every test reuses one compiled
step per device layout), a fixed global batch, and bundled real faces for the loop tests."""
from __future__ import annotations

import jax
import numpy as np

from datasets.pipeline import ArraySource
from train.config import TrainConfig, apply_overrides, preset
from train.parallel import build_step, make_mesh, put_batch, put_replicated, to_host

# batch 32: 4 samples per device on 8 devices (= the minibatch-stddev group).
TEST_OVERRIDES = ["batch=32", "log_every=10", "ckpt_every=10", "sample_every=15", "export_every=15",
                  "sample_seeds=4", "keep=2"]


def make_config(*extra: str, resolution: int = 16) -> TrainConfig:
    """The loop tests' config (16 px, 32 channels)."""
    return apply_overrides(preset("tiny"), [f"model.resolution={resolution}"] + TEST_OVERRIDES + list(extra))


def step_config() -> TrainConfig:
    """The step-equivalence tests' config: 8 px (b4, b8), the smallest graph that has every kind of block.

    Adam eps = 1: Adam divides by sqrt(v) + eps, so with eps = 1e-8 an element whose gradient is at float-noise
    level (and the small lazy-regularisation gradients right after the main step) gets an O(lr) update whose
    value depends on the summation order; an elementwise 1e-5 comparison would then measure Adam's
    conditioning, not the parallel step. With eps = 1 the update is proportional to the gradient.
    """
    return make_config("opt.eps=1.0", resolution=8)


def init_host_state(cfg: TrainConfig):
    """The recipe's fresh state for cfg's seed, as numpy."""
    return to_host(cfg.recipe.init(cfg.hparams, jax.random.key(cfg.seed), None)[1])


def mapped_step(cfg: TrainConfig, mode: str, devices: tuple, due: tuple[str, ...] | None = None):
    """(step(state, rows [D,n,R,R,C]) -> (state, metrics), mesh) for cfg's family on `devices`; due: the lazy
    phases fixed at trace time (None: lax.cond on the state's step)."""
    mesh = make_mesh(devices)
    fn = build_step(cfg.recipe.step, cfg.hparams, mode, devices, due)
    seed = put_replicated(np.uint32(cfg.seed), mesh)

    def call(state, rows):
        return fn(put_replicated(state, mesh), put_batch({"image": rows}, mesh, mode), seed, None)
    return call, fn, mesh


def global_batch(cfg: TrainConfig, seed: int = 0) -> np.ndarray:
    r = cfg.hparams.model.resolution
    return np.random.RandomState(seed).uniform(-1, 1, (cfg.batch, r, r, cfg.hparams.model.img_channels)
                                               ).astype(np.float32)


def split_interleaved(x: np.ndarray, num_devices: int) -> np.ndarray:
    """[N,...] -> [D, N/D, ...] with device d holding rows d, d+D, ... (the step's global sample order)."""
    return np.swapaxes(x.reshape((x.shape[0] // num_devices, num_devices) + x.shape[1:]), 0, 1)


def faces(resolution: int = 16, n: int = 100) -> ArraySource:
    """scikit-image's bundled LFW faces (the first 100 of lfw_subset are faces), resized, grey -> RGB."""
    from PIL import Image
    from skimage.data import lfw_subset

    out = [np.asarray(Image.fromarray(np.uint8(f * 255)).resize((resolution, resolution), Image.BICUBIC))
           for f in lfw_subset()[:n]]                                            # [n] x [R,R] uint8
    return ArraySource(np.repeat(np.stack(out)[..., None], 3, axis=-1))         # [n,R,R,3]
