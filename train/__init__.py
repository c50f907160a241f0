"""train/: data-parallel StyleGAN2 training and fine-tuning (issue 5).

config (TrainConfig, presets, overrides) -> state (TrainState, optimisers, freezing) -> step (per-device step,
pmap programming model) -> parallel (pmap / shard_map mapping, multi-process) -> loop.run (checkpoints via
ckpt, metrics via logs). `gafu train` is in commands.py.
"""
