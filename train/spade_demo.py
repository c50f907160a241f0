"""`gafu demo spade`: SPADE-AnimeFace end to end on the embedded data (no downloads), in a few minutes on a CPU.

  1. data: the bundled LFW faces drawn in two cartoon looks (datasets/demo.py cartoon_domains) and the roughs of
     the first look, made by the SPADE-AnimeFace recipe (datasets/sketch.py) at work size 64; the last 10 faces
     (all their framings) are held out;
  2. train a tiny SPADE on (rough, look-A painting) pairs: AnimeFace's losses (hinge + pixel L1 x 100) without the
     VGG term, which would cost ~90 % of each step of a model this small on a CPU;
  3. paint held-out roughs and the rough of a photo (scikit-image's astronaut, in colour), several seeds each;
  4. fine-tune on look B from the same roughs (G, D and the running statistics start from A's), so both models
     paint the same input and differ in look;
  5. blend: blocks below r from A and from r up from B (nets.paths' b{R} keys, interp.blend), at every r;
  6. write report.md, one line per image.

Library code; `gafu demo spade` (train/demo_commands.py) is a thin front over `run_spade_demo`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from datasets.demo import cartoon_domains, heldout_photo
from datasets.pipeline import ArraySource
from datasets.sketch import rough_sketch
from interp import figure
from interp.blend_files import BlendSpec
from nets import images, registry, spade
from train.config import TrainConfig, apply_overrides, preset
from train.demo import check_run, write_report
from train.loop import run

RESOLUTION = 32
ROUGH_SIZE = 64           # the rough maker's work size: 64 keeps the face layout at 32 px, ~15 ms per image
VARIANTS = 4              # framings per bundled face
HELD_OUT = 10             # the last faces, never trained on
STEPS_A = 1500
STEPS_B = 300


def demo_config(seed: int = 0) -> TrainConfig:
    """Both runs' config: preset 'spade-tiny' without the VGG loss, with the demo's run fields."""
    return apply_overrides(preset("spade-tiny"), ["loss.lambda_vgg=0", f"model.rough_size={ROUGH_SIZE}",
                                                  f"seed={seed}", "keep=1", "export_every=0"])


def demo_data() -> dict[str, np.ndarray]:
    """Looks A and B, the roughs of A, and the held-out split (uint8 [N,R,R,3] each) plus the astronaut's rough."""
    look_a, look_b = cartoon_domains(RESOLUTION, VARIANTS)                            # face-major order
    roughs = np.stack([rough_sketch(x, ROUGH_SIZE) for x in look_a])
    n_train = (len(look_a) // VARIANTS - HELD_OUT) * VARIANTS
    photo = heldout_photo(RESOLUTION, grey=False)
    return {"a": look_a[:n_train], "b": look_b[:n_train], "rough": roughs[:n_train],
            "test_rough": roughs[n_train::VARIANTS], "test_a": look_a[n_train::VARIANTS],
            "test_b": look_b[n_train::VARIANTS], "photo": photo, "photo_rough": rough_sketch(photo, ROUGH_SIZE)}


def run_spade_demo(out: str | Path, *, steps_a: int = STEPS_A, steps_b: int = STEPS_B, seed: int = 0,
                   overwrite: bool = False, progress: bool = True) -> Path:
    """Train A, paint, fine-tune B, blend; write the figures and `out/report.md`, whose path is returned."""
    out = Path(out)
    if (out / "report.md").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a demo (report.md); pass --overwrite or choose another --out")
    t0 = time.time()
    lines: list[str] = []

    def note(name: str, grid: np.ndarray, text: str) -> None:
        images.write_png(out / name, grid)
        lines.append(f"![{name}]({name})\n\n{text}\n")

    def show(rows: list[np.ndarray]) -> np.ndarray:
        """Rows of uint8 [N,R,R,3] cells -> one grid (small cells nearest-upscaled by make_grid)."""
        return images.make_grid(np.concatenate(rows), rows=len(rows))

    d = demo_data()
    pick = np.linspace(0, len(d["a"]) - 1, 10).astype(int)
    note("data.png", show([d["rough"][pick], d["a"][pick], d["b"][pick]]),
         f"Training pairs: roughs (top; the SPADE-AnimeFace recipe at work size {ROUGH_SIZE}) of the bundled LFW "
         f"faces drawn in cartoon look A (middle, {len(d['a'])} images: {len(d['a']) // VARIANTS} faces x "
         f"{VARIANTS} framings) and the same faces in look B (bottom). {HELD_OUT} faces are held out.")

    base = demo_config(seed)
    run_a = run(base.replace(steps=steps_a, ckpt_every=max(steps_a, 1), sample_every=max(steps_a, 1)),
                out / "train_A", data=ArraySource(d["a"], sketch=d["rough"]), progress=progress)
    check_run(run_a, "training on look A")
    run_b = run(base.replace(steps=steps_b, ckpt_every=max(steps_b, 1), sample_every=max(steps_b, 1),
                             init_from=str(out / "train_A")),
                out / "train_B", data=ArraySource(d["b"], sketch=d["rough"]), progress=progress)
    check_run(run_b, "fine-tuning on look B")
    arch, cfg, g_a = registry.load_generator(out / "train_A" / "ema", "spade")
    _, _, g_b = registry.load_generator(out / "train_B" / "ema", "spade")
    seeds = list(range(len(d["test_rough"])))

    paint = lambda g, cond: spade.paint(cfg, g, cond, seeds[:len(cond)])            # noqa: E731
    note("paint_heldout.png", show([d["test_rough"], paint(g_a, d["test_rough"]), d["test_a"]]),
         f"Held-out roughs (top), painted by model A after {steps_a} steps (middle, inference mode: running "
         f"batch-norm statistics), and the paintings they were made from (bottom, never trained on).")

    photo_rows = [np.repeat(d["photo_rough"][None], 6, axis=0)]
    photo_rows += [spade.paint(cfg, g, photo_rows[0], list(range(6))) for g in (g_a, g_b)]
    note("paint_photo.png", show([np.concatenate([d["photo"][None], r[:5]]) for r in photo_rows]),
         "A photo in neither domain (scikit-image's astronaut, Eileen Collins, NASA): the photo, then its rough "
         "(top row), painted with 5 seeds by model A (middle) and model B (bottom). The rough is made by the "
         "same function as the training roughs. The seeds paint alike: with the pixel L1 x 100 to one target "
         "per rough, this small G learns to all but ignore z.")

    swaps = [r for r in cfg.resolutions if r > cfg.resolutions[0]]
    variants = [g_a] + [BlendSpec(mode="swap", resolution=r).apply(g_a, g_b, ("A", "B"), arch.scope)
                        for r in swaps] + [g_b]
    rows = figure.render_rows(lambda g: paint(g, d["test_rough"][:8]), variants)      # [rows,8,R,R,3]
    note("blend.png", show(list(rows)),
         f"Blending by resolution: model A (top row), model B fine-tuned from A for {steps_b} steps on look B "
         f"(bottom row), and between them blends with blocks below r from A and from r up from B, for "
         f"r = {', '.join(map(str, swaps))} (top to bottom); 8 held-out roughs, one seed each. Batch-norm and "
         "spectral-norm statistics travel with their block's parent; previews with A. The two looks differ in "
         f"colour only, and the colour is painted by the top block (b{RESOLUTION}: the last residual block and "
         "to_rgb): every row that takes it from B paints in B's look, while the layout, shared by both, comes "
         "through every row.")

    alphas = (0.0, 0.25, 0.5, 0.75, 1.0)
    lerps = [BlendSpec(mode="lerp", alpha=a).apply(g_a, g_b, ("A", "B"), arch.scope) for a in alphas]
    note("lerp.png", show(list(figure.render_rows(lambda g: paint(g, d["test_rough"][:8]), lerps))),
         f"Weight interpolation (ESRGAN-style lerp of every parameter; statistics picked from the larger share): "
         f"share of B = {', '.join(map(str, alphas))} (top to bottom), the same 8 held-out roughs.")

    return write_report(out, "gafu demo spade", lines, t0)
