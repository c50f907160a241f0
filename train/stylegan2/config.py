"""StyleGAN2's training section and presets.

Recipe defaults follow NVlabs/stylegan2-ada-pytorch (`train.py` cfg_specs, `training/loss.py`): non-saturating
loss, lazy R1 and path length, style mixing, a G EMA with a half-life in kimg, and ADA.
"""
from __future__ import annotations

import dataclasses

from nets.stylegan2 import StyleGAN2Config, preset as model_preset
from train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class LossConfig:
    r1_gamma: float = 10.0            # R1 weight (NV: 10 config-f, 1 paper256); 0 disables R1
    d_reg_every: int = 16             # lazy R1 interval (D steps)
    pl_weight: float = 2.0            # path-length weight; 0 disables it
    pl_decay: float = 0.01            # EMA decay of the running mean path length
    pl_batch_shrink: int = 2          # path-length batch = batch // shrink
    g_reg_every: int = 4              # lazy path-length interval (G steps)
    style_mixing: float = 0.9         # probability that a sample mixes two latents


@dataclasses.dataclass(frozen=True)
class OptConfig:
    g_lr: float = 0.002
    d_lr: float = 0.002
    beta1: float = 0.0
    beta2: float = 0.99
    eps: float = 1e-8


@dataclasses.dataclass(frozen=True)
class EmaConfig:
    kimg: float = 10.0                # half-life of the generator EMA, in thousands of images
    rampup: float | None = None       # NV 'auto': half-life <= rampup * images seen so far (0.05), None = off


@dataclasses.dataclass(frozen=True)
class AdaConfig:
    enabled: bool = True              # adaptive augmentation of everything D sees (p starts at p_init)
    target: float = 0.6               # target for r_t = E[sign(D(real))]
    interval: int = 4                 # steps between p updates
    kimg: float = 500.0               # p can go 0 -> 1 in this many thousand images (100 when fine-tuning)
    p_init: float = 0.0


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    freeze_d: int = 0                 # Freeze-D: the first N discriminator layers from the input side
    freeze_g_res: int = 0             # freeze generator blocks b4..b{freeze_g_res} (0: none)
    freeze_mapping: bool = False      # also freeze the mapping network


@dataclasses.dataclass(frozen=True)
class Hparams:
    """Everything the StyleGAN2 step depends on (hashable: the key of the compiled step)."""
    model: StyleGAN2Config = StyleGAN2Config()
    loss: LossConfig = LossConfig()
    opt: OptConfig = OptConfig()
    ema: EmaConfig = EmaConfig()
    ada: AdaConfig = AdaConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    split: str = "train"              # the dataset split of the training images

    def __post_init__(self):
        if self.loss.pl_batch_shrink < 1:
            raise ValueError(f"loss.pl_batch_shrink must be >= 1; got {self.loss.pl_batch_shrink}")


def _tiny() -> TrainConfig:
    # NV 'auto' rules at 32 px, batch 8: gamma = 0.0002 res^2 / batch, ema = batch * 10 / 32 kimg.
    hp = Hparams(model=model_preset("tiny"), loss=LossConfig(r1_gamma=0.0256),
                 opt=OptConfig(g_lr=0.0025, d_lr=0.0025), ema=EmaConfig(kimg=2.5, rampup=0.05),
                 ada=AdaConfig(kimg=100.0))
    return TrainConfig(hparams=hp, batch=8, steps=300, ckpt_every=100, sample_every=100, export_every=100)


def _paper256() -> TrainConfig:
    hp = Hparams(model=model_preset("paper256"), loss=LossConfig(r1_gamma=1.0),
                 opt=OptConfig(g_lr=0.0025, d_lr=0.0025), ema=EmaConfig(kimg=20.0))
    return TrainConfig(hparams=hp, batch=64)


def _config_f() -> TrainConfig:
    hp = Hparams(model=model_preset("config-f"), loss=LossConfig(r1_gamma=10.0), ema=EmaConfig(kimg=10.0))
    return TrainConfig(hparams=hp, batch=32)


PRESETS = {"tiny": _tiny, "paper256": _paper256, "config-f": _config_f}
