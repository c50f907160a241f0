"""SPADE (and SPADE-AnimeFace) behind the training seam: hparams and presets (config.py), state (state.py), the
per-device step (step.py) and the Recipe record the core calls (recipe.py)."""
