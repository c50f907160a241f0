"""GANs N' Roses' training section and presets.

'gnr' is mchong6/GANsNRoses `train.py` (main branch) with the released architecture (num_down 4; main's own default
of 3 cannot load the release, issue #18): both directions trained jointly; non-saturating adversarial loss over the
three heads of each image D plus 2 x the latent D per domain; style consistency 50 (sum of per-dimension variances
of the style codes of one content group); cycle 20 x MSE + 10 x LPIPS-VGG, reconstructing with another member's
style; style reconstruction 5 x MSE; lazy R1 (gamma 10 every 16 steps) on both image Ds and the latent D; Adam 2e-3,
betas (0, 0.99) for G and (0, 0.99)^(16/17) for D, both halved every 100k steps; G EMA 0.999; batch 4 = one content
group of 4 augmented copies of one image.

The R1 quirk: the reference differentiates the *mean* of a head's logits over batch and patches, so each sample's
gradient carries a factor 1 / (B * patches) and the penalty shrinks by its square. `loss.r1_reduce="mean"` (the
default) keeps that magnitude exactly (gamma 10 was tuned with it) but takes the mean inside each content group,
so it does not change with the number of groups per step or device. "sample" is the usual per-sample R1 of the
patch mean (the group-size factor removed: g^2 times larger).
"""
from __future__ import annotations

import dataclasses

from nets.gnr import GNRConfig, preset as model_preset
from train.config import TrainConfig

R1_REDUCES = ("mean", "sample")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    lambda_adv_latent: float = 2.0    # the latent D's G-side terms, per domain
    lambda_scon: float = 50.0         # style consistency: sum over dims of the group variance of the style codes
    lambda_cycle: float = 20.0        # MSE of the cycle reconstruction
    lambda_lpips: float = 10.0        # LPIPS-VGG of the cycle reconstruction ("10 for anime"); 0 disables LPIPS
    lambda_style: float = 5.0         # MSE between the injected and the re-encoded style code
    r1_gamma: float = 10.0
    r1_every: int = 16                # lazy R1 interval (0: never)
    r1_reduce: str = "mean"           # 'mean' (the reference's magnitude, per group) | 'sample' (see module doc)


@dataclasses.dataclass(frozen=True)
class OptConfig:
    lr: float = 2e-3                  # G and D
    beta1: float = 0.0
    beta2: float = 0.99
    eps: float = 1e-8
    decay_every: int = 100000         # StepLR: lr x decay_factor every this many steps (0: constant)
    decay_factor: float = 0.5
    ema: float = 0.999                # G EMA decay per step


@dataclasses.dataclass(frozen=True)
class AugConfig:
    """kornia's pipeline of the reference, per sample: RandomAffine (applied with probability p_affine, kornia's
    default 0.5) -> Resize(R * 286/256) -> RandomCrop(R) -> RandomHorizontalFlip."""
    p_affine: float = 0.5
    degrees: float = 20.0
    scale_min: float = 0.8
    scale_max: float = 1.2
    translate: float = 0.1            # fraction of the image size
    shear: float = 0.15               # degrees (kornia reads a float shear as an x-shear angle range in degrees)
    resize: float = 286 / 256         # resize factor before the random crop back to R
    p_flip: float = 0.5


@dataclasses.dataclass(frozen=True)
class Hparams:
    """Everything the GNR step depends on (hashable: the key of the compiled step)."""
    model: GNRConfig = GNRConfig()
    loss: LossConfig = LossConfig()
    opt: OptConfig = OptConfig()
    aug: AugConfig = AugConfig()
    group: int = 4                    # content group size: one image, `group` independent augmentations
    split_a: str = "trainA"           # faces (domain A)
    split_b: str = "trainB"           # toons (domain B)

    def __post_init__(self):
        if self.group < 2:
            raise ValueError(f"group must be >= 2 (the diversity head and style consistency need a spread); "
                             f"got {self.group}")
        if self.loss.r1_reduce not in R1_REDUCES:
            raise ValueError(f"loss.r1_reduce must be one of {R1_REDUCES}; got {self.loss.r1_reduce!r}")
        if self.loss.r1_every < 0 or self.opt.decay_every < 0:
            raise ValueError("loss.r1_every and opt.decay_every must be >= 0")
        a = self.aug
        if not (0 <= a.p_affine <= 1 and 0 <= a.p_flip <= 1 and 0 < a.scale_min <= a.scale_max and a.resize >= 1):
            raise ValueError(f"invalid augmentation settings {a}")


def _release() -> TrainConfig:
    return TrainConfig(family="gnr", hparams=Hparams(model=model_preset("gnr")), batch=4, steps=300000,
                       ckpt_every=2000, sample_every=1000, export_every=2000, sample_seeds=8)


def _tiny() -> TrainConfig:
    return TrainConfig(family="gnr", hparams=Hparams(model=model_preset("tiny")), batch=8, steps=300,
                       ckpt_every=100, sample_every=100, export_every=100, sample_seeds=8)


PRESETS = {"gnr": _release, "gnr-tiny": _tiny}
