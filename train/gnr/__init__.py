"""GANs N' Roses behind the training seam: hparams and presets (config.py), state (state.py), the per-sample
augmentation (augment.py), the losses (losses.py), the per-device step (step.py) and the Recipe (recipe.py)."""
