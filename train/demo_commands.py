"""`gafu demo`: the README's main job, Toonify end to end on the embedded data (no downloads).

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

This is CLI-front code: it chains datasets/, train/ and interp/, which the library floors keep apart.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

STEPS_A = 3000
STEPS_B = 300
DEMO_LR = 0.01            # G and D; NV's 0.0025 leaves blurry blobs after the ~20 kimg the demo can afford
DEMO_R1 = 1.0             # NV's 0.0256 at 32 px: faces without eyes or mouth, and B collapses to one face


def demo_config(seed: int = 0):
    """The demo's TrainConfig (both runs): preset 'tiny' with the fast recipe described in the module doc."""
    from train import config as C

    base = C.preset("tiny")
    return base.replace(seed=seed, keep=1, export_every=0,
                        opt=dataclasses.replace(base.opt, g_lr=DEMO_LR, d_lr=DEMO_LR),
                        loss=dataclasses.replace(base.loss, r1_gamma=DEMO_R1, pl_weight=0.0, style_mixing=0.0),
                        ada=dataclasses.replace(base.ada, enabled=False))


def without_noise(g_vars: dict) -> dict:
    """G variables with every noise_strength set to 0 (same tree; everything else shared, not copied)."""
    import jax
    import numpy as np

    def zero(path: tuple, x: Any) -> Any:
        return np.zeros_like(x) if getattr(path[-1], "key", None) == "noise_strength" else x
    return {**g_vars, "params": jax.tree_util.tree_map_with_path(zero, g_vars["params"])}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, fine-tune, blend and toonify on the embedded data (a few minutes)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--steps-a", type=int, default=STEPS_A, help=f"training steps on domain A (default {STEPS_A})")
    p.add_argument("--steps-b", type=int, default=STEPS_B, help=f"fine-tuning steps on domain B (default {STEPS_B})")
    p.add_argument("--project-steps", type=int, default=200, help="W+ projection steps (default 200)")
    p.add_argument("--swap", type=int, default=16, help="first block resolution taken from B for the toon "
                   "(default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder's results")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    report = run_demo(args.out, steps_a=args.steps_a, steps_b=args.steps_b, project_steps=args.project_steps,
                      swap=args.swap, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {report}")
    return 0


def run_demo(out: str | Path, *, steps_a: int, steps_b: int, project_steps: int, swap: int = 16, seed: int = 0,
             overwrite: bool = False, progress: bool = True) -> Path:
    import numpy as np

    from datasets.demo import load_demo_domains
    from datasets.pipeline import ArraySource
    from interp.blend_files import BlendSpec
    from interp import figure, toonify
    from interp.project import ProjectConfig
    from nets import images
    from nets.sampling import load_generator
    from train import config as C
    from train.loop import run

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
                out / "train_A", source=ArraySource(a), progress=progress)
    _check(run_a, "training on domain A")
    tune = base.replace(steps=steps_b, sample_every=max(steps_b, 1), ckpt_every=max(steps_b, 1),
                        finetune=C.FinetuneConfig(init_from=str(out / "train_A")))
    run_b = run(tune, out / "train_B", source=ArraySource(b), progress=progress)
    _check(run_b, "fine-tuning on domain B")

    cfg, g_a = load_generator(str(out / "train_A" / "ema"))
    _, g_b = load_generator(str(out / "train_B" / "ema"))
    g_a, g_b = without_noise(g_a), without_noise(g_b)
    seeds = list(range(8))
    both = figure.render_rows(cfg, [g_a, g_b], seeds)
    images.write_png(out / "samples.png", images.make_grid(both))
    note("samples.png", f"Samples (EMA generators, 8 fixed seeds): A after {steps_a} steps (top), and B after "
         f"{steps_b} fine-tuning steps from A (bottom). Same seeds, so rows correspond. Recipe: 'tiny' preset, "
         f"lr {DEMO_LR}, batch {base.batch}, R1 gamma {DEMO_R1}, no path-length reg, style mixing or ADA. All "
         "figures are drawn with the per-pixel noise inputs off (at this scale G spends them on speckle).")

    swaps = [r for r in cfg.resolutions if r > 4]
    grid = figure.swap_figure(cfg, g_a, g_b, lambda r: BlendSpec(mode="swap", resolution=r).apply(g_a, g_b),
                              swaps, seeds)
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

    text = "# gafu demo\n\n" + "\n".join(lines) + f"\nTotal time {time.time() - t0:.0f} s.\n"
    images.atomic_write_bytes(out / "report.md", text.encode())
    return out / "report.md"


def _check(result, what: str) -> None:
    if result.status != "done":
        raise ValueError(f"{what} stopped at step {result.step} ({result.status}); see {result.workdir}")
