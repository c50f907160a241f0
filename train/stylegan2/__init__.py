"""StyleGAN2 behind the training seam: hparams and presets (config.py), state and freezing (state.py), the
per-device step (step.py) and the Recipe record the core calls (recipe.py)."""
