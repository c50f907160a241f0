"""The README's main job (`gafu demo`): Toonify end to end on the embedded data (no downloads).

  1. train a tiny StyleGAN2 on domain A (real LFW faces bundled with scikit-image, datasets/demo.py);
  2. fine-tune it on domain B (the same faces drawn as flat-tone cartoons), starting from A's G and D;
  3. blend: low-resolution blocks from A, high-resolution blocks from B, at every swap resolution (a PNG grid);
  4. project a held-out photo (scikit-image's astronaut) into A's W+ and render it through the blend ("toonify");
  5. write report.md, one line per image.

The recipe (`demo_config`) is the 'tiny' preset made fast: the whole budget is a few tens of kimg, so the
learning rate is 4x NV's, R1 is stronger than NV's 'auto' rule (gamma 1 rather than 0.0256), and path-length
regularisation, style mixing and ADA (whose p could not move within this budget anyway) are off. One config serves
both runs, so the fine-tune reuses the compiled step.
At this scale G learns to spend its per-pixel noise inputs on speckle (b16/b32 noise_strength grows to ~0.2 while
D does not object), so the figures are drawn with the noise inputs switched off (noise_strength = 0): the
deterministic part of each generator, which holds the faces.

Library code (train/ may import interp/): `gafu demo` in train/demo_commands.py is a thin front over `run_demo`.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from datasets.demo import load_demo_domains
from datasets.pipeline import ArraySource
from interp import figure, toonify
from interp.blend_files import BlendSpec
from interp.project import ProjectConfig
from nets import images, registry
from nets.stylegan2 import without_noise
from train.config import TrainConfig, preset
from train.loop import RunResult, run

STEPS_A = 3000
STEPS_B = 300
DEMO_LR = 0.01            # G and D; NV's 0.0025 leaves blurry blobs after the ~20 kimg the demo can afford
DEMO_R1 = 1.0             # NV's 0.0256 at 32 px: faces without eyes or mouth, and B collapses to one face


def demo_config(seed: int = 0) -> TrainConfig:
    """The demo's TrainConfig (both runs): preset 'tiny' with the fast recipe described in the module doc."""
    base = preset("tiny")
    hp = base.hparams
    return base.replace(seed=seed, keep=1, export_every=0).with_hparams(
        opt=dataclasses.replace(hp.opt, g_lr=DEMO_LR, d_lr=DEMO_LR),
        loss=dataclasses.replace(hp.loss, r1_gamma=DEMO_R1, pl_weight=0.0, style_mixing=0.0),
        ada=dataclasses.replace(hp.ada, enabled=False))


def run_demo(out: str | Path, *, steps_a: int = STEPS_A, steps_b: int = STEPS_B, project_steps: int = 200,
             swap: int = 16, seed: int = 0, overwrite: bool = False, progress: bool = True) -> Path:
    """Train A, fine-tune B, blend, toonify; write the figures and `out/report.md`, whose path is returned."""
    out = Path(out)
    if (out / "report.md").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a demo (report.md); pass --overwrite or choose another --out")
    t0 = time.time()
    lines: list[str] = []

    def note(name: str, text: str) -> None:
        lines.append(f"![{name}]({name})\n\n{text}\n")

    a, b, photo = load_demo_domains(32)                                             # uint8 [N,32,32,3]
    pick = np.linspace(0, len(a) - 1, 16).astype(int)
    images.write_png(out / "domains.png", images.make_grid(np.concatenate([a[pick], b[pick]]), rows=2))
    note("domains.png", f"Training data: domain A (top, {len(a)} real LFW face crops from scikit-image) and "
         "domain B (bottom, the same faces drawn as flat-tone cartoons).")

    base = demo_config(seed)
    run_a = run(base.replace(steps=steps_a, ckpt_every=max(steps_a, 1), sample_every=max(steps_a, 1)),
                out / "train_A", data=ArraySource(a), progress=progress)
    check_run(run_a, "training on domain A")
    tune = base.replace(steps=steps_b, sample_every=max(steps_b, 1), ckpt_every=max(steps_b, 1),
                        init_from=str(out / "train_A"))
    check_run(run(tune, out / "train_B", data=ArraySource(b), progress=progress), "fine-tuning on domain B")

    arch, cfg, g_a = registry.load_generator(out / "train_A" / "ema", "stylegan2")
    _, _, g_b = registry.load_generator(out / "train_B" / "ema", "stylegan2")
    g_a, g_b = without_noise(g_a), without_noise(g_b)
    seeds = list(range(8))
    sample = lambda g: arch.sample(cfg, g, seeds)                                  # noqa: E731
    images.write_png(out / "samples.png", images.make_grid(figure.render_rows(sample, [g_a, g_b])))
    note("samples.png", f"Samples (EMA generators, 8 fixed seeds): A after {steps_a} steps (top), and B after "
         f"{steps_b} fine-tuning steps from A (bottom). Same seeds, so rows correspond. Recipe: 'tiny' preset, "
         f"lr {DEMO_LR}, batch {base.batch}, R1 gamma {DEMO_R1}, no path-length reg, style mixing or ADA. All "
         "figures are drawn with the per-pixel noise inputs off (at this scale G spends them on speckle).")

    swaps = [r for r in cfg.resolutions if r > 4]
    grid = figure.swap_figure(sample, g_a, g_b, lambda r: BlendSpec(mode="swap", resolution=r).apply(g_a, g_b),
                              swaps)
    images.write_png(out / "blend.png", grid)
    note("blend.png", "Layer swapping (Pinkney & Adler 2020): top row A, bottom row B; between them blocks below "
         f"r come from A and blocks from r up from B, for r = {', '.join(map(str, swaps))} (top to bottom). "
         "Low-resolution blocks carry pose and face shape, high-resolution blocks colour and line. Mapping network "
         "and w_avg come from A.")

    blended = BlendSpec(mode="swap", resolution=swap).apply(g_a, g_b)
    pc = ProjectConfig(steps=project_steps, w_plus=True, optimize_noise=False)   # noise is off
    res = toonify.toonify(photo, cfg, g_a, cfg, blended, pc, seed=seed, progress=progress)
    images.write_png(out / "toonify.png", res.figure())
    note("toonify.png", "Toonify yourself: a held-out photo (scikit-image's astronaut, in neither domain) | its "
         f"W+ projection into A ({project_steps} steps, LPIPS {res.projected.lpips_start:.3f} -> "
         f"{res.projected.lpips_final:.3f}) | the same latent rendered by the blend (blocks >= {swap} from B).")

    return write_report(out, "gafu demo", lines, t0)


def write_report(out: Path, title: str, lines: list[str], t0: float) -> Path:
    """out/report.md (atomically): the title, one entry per image, the total time since t0."""
    text = f"# {title}\n\n" + "\n".join(lines) + f"\nTotal time {time.time() - t0:.0f} s.\n"
    images.atomic_write_bytes(out / "report.md", text.encode())
    return out / "report.md"


def check_run(result: RunResult, what: str) -> None:
    """A demo's training run must have finished; else one error naming the step, the status and the workdir."""
    if result.status != "done":
        raise ValueError(f"{what} stopped at step {result.step} ({result.status}); see {result.workdir}")
