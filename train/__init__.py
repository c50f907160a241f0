"""train/: data-parallel training and fine-tuning of every model family, behind one recipe seam.

The generic core knows runs, not models:
  config.py    TrainConfig (run-level fields + the family's name and its `hparams` section), presets, overrides
  recipe.py    the Recipe record a family provides (init, per-device step, sample, export, metrics) and the table
               of families
  parallel.py  the per-device step mapped over devices (pmap or shard_map over the axis 'data'), multi-process
  loop.py      run(config, workdir): data, resume, checkpoints, metrics, previews, exports
  ckpt.py      training checkpoints (orbax), model-file exports, --init-from
  logs.py      metrics.jsonl and TensorBoard
Shared pieces of recipes: losses.py (GAN losses, lazy regularisation, EMA, ADA formulas), augment.py (ADA).
Families: stylegan2/, spade/, gnr/ (config, state, step, recipe). Library code over several floors: demo.py,
spade_demo.py, gnr_demo.py (`gafu demo [spade|gnr]`).
Front: commands.py (`gafu train`), demo_commands.py (`gafu demo`).

To add a family: write train/<family>/config.py (its hparams dataclass and presets), state.py, step.py and
recipe.py (`RECIPE = Recipe(...)`), and name it in train/recipe.py's FAMILIES.
"""
