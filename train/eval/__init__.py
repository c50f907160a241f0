"""Evaluation metrics of generators, as NVlabs/stylegan2-ada-pytorch's metrics/ and the GANs N' Roses paper report
them: FID, KID, precision/recall (math in metrics.py), dataset statistics and their cache (stats.py), fakes of every
family (fakes.py), PPL and LPIPS diversity (perceptual.py), and the runner behind `gafu eval` and training's
`metrics` (run.py)."""
