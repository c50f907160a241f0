"""`gafu demo gnr`: GANs N' Roses end to end on the embedded data (no downloads), in a few minutes on a CPU.

  1. data: domain A = the bundled LFW faces (grey, 8 framings each; datasets/demo.py), domain B = the same
     faces drawn in 8 distinct looks (palette, tones, line weight, background; datasets/styles.py), unpaired;
     the last HELD_OUT faces are in neither training split;
  2. train a tiny GNR (both directions, all of the reference's losses) from A to B;
  3. stills: the astronaut (held out, in neither domain) under 8 sampled styles; 8 held-out faces under one style;
  4. video: a short clip of the astronaut's face with small pans and zooms, translated frame by frame with one
     fixed style and with drifting styles, and the temporal stability of both (mean LPIPS between consecutive
     frames, against the input's);
  5. report.md, one line per output.

The recipe is 'gnr-tiny' made fast for a few minutes of CPU: batch 4 (one content group, as the reference),
EMA 0.99 (the reference's 0.999 would still be mostly the initial weights after the demo's steps) and a mapping
lr multiplier of 0.1 (0.01 makes the style mapping barely move within the budget). Library code;
`gafu demo gnr` (train/demo_commands.py) is a thin front over `run_gnr_demo`.
"""
from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from datasets.demo import heldout_clip, heldout_photo, photo_domain
from datasets.pipeline import ArraySource
from datasets.styles import LOOKS, styled_domain
from interp import gnr as translate
from interp import video
from nets import images, lpips
from train.config import TrainConfig, apply_overrides, preset
from train.demo import check_run, write_report
from train.loop import run

RESOLUTION = 32
VARIANTS = 8              # framings per bundled face (with 8 looks: every face in every look)
HELD_OUT = 8              # the last faces, never trained on
STEPS = 1100
CLIP_FRAMES, CLIP_FPS, CLIP_SIZE = 36, 12.0, 64


def demo_config(seed: int = 0) -> TrainConfig:
    return apply_overrides(preset("gnr-tiny"), ["batch=4", "opt.ema=0.99", "model.lr_mlp=0.1", f"seed={seed}",
                                                "keep=1", "export_every=0", "log_every=50"])


def demo_data() -> dict[str, np.ndarray]:
    a = photo_domain(RESOLUTION, VARIANTS)                                            # face-major
    b, looks = styled_domain(RESOLUTION, VARIANTS)
    n = (len(a) // VARIANTS - HELD_OUT) * VARIANTS
    return {"a": a[:n], "b": b[:n], "looks": looks[:n], "test_a": a[n::VARIANTS]}


def run_gnr_demo(out: str | Path, *, steps: int = STEPS, seed: int = 0, overwrite: bool = False,
                 progress: bool = True) -> Path:
    """Train, translate stills and a clip; write the figures, the videos and `out/report.md` (returned)."""
    out = Path(out)
    if (out / "report.md").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a demo (report.md); pass --overwrite or choose another --out")
    video.require_ffmpeg()                                    # before minutes of training, not after
    t0 = time.time()
    lines: list[str] = []

    def note(name: str, text: str, grid: np.ndarray | None = None) -> None:
        if grid is not None:
            images.write_png(out / name, grid)
        lines.append(f"![{name}]({name})\n\n{text}\n" if name.endswith(".png") else f"- `{name}`: {text}\n")

    def show(rows: list[np.ndarray]) -> np.ndarray:
        return images.make_grid(np.concatenate(rows), rows=len(rows))

    d = demo_data()
    pick = np.arange(0, len(d["b"]), len(d["b"]) // 16)[:16]
    note("data.png", f"Training data, unpaired: domain A (top, {len(d['a'])} grey LFW face crops: "
         f"{len(d['a']) // VARIANTS} faces x {VARIANTS} framings) and domain B (bottom, the same faces in "
         f"{len(LOOKS)} looks: {', '.join(look.name for look in LOOKS)}). {HELD_OUT} faces are held out.",
         show([d["a"][pick], d["b"][pick]]))

    cfg = demo_config(seed).replace(steps=steps, ckpt_every=max(steps, 1), sample_every=max(steps, 1))
    # One device: the demo's batch is one content group, which cannot be split.
    res = run(cfg, out / "train", data={"trainA": ArraySource(d["a"]), "trainB": ArraySource(d["b"])},
              devices=jax.devices()[:1], progress=progress)
    check_run(res, "training GNR")
    model = out / "train" / "ema"
    t = translate.load_translator(model)

    photo = heldout_photo(RESOLUTION)
    many = translate.translate_image(t, photo, translate.seed_styles(t.cfg, 0, 8))
    note("styles.png", f"One face, many styles: the astronaut (left; scikit-image's, Eileen Collins, NASA; in "
         f"neither domain) translated by the EMA model after {steps} steps under 8 sampled styles (seeds 0-7).",
         many.figure())
    one = translate.seed_styles(t.cfg, 3, 1)
    faces = d["test_a"]
    same = np.stack([translate.translate_image(t, f, one).outputs[0] for f in faces])
    note("consistency.png", f"One style, many faces: {len(faces)} held-out faces (top) under style seed 3 "
         "(bottom).", show([faces, same]))

    clip = heldout_clip(CLIP_SIZE, CLIP_FRAMES)
    src = out / "clip.mp4"
    with video.VideoWriter(src, CLIP_FPS, overwrite=True) as w:
        for frame in clip:
            w.write(frame)
    note("clip.mp4", f"the input clip: {CLIP_FRAMES} frames of the astronaut's face with small pans and zooms, "
         f"{CLIP_SIZE}x{CLIP_SIZE} at {CLIP_FPS:g} fps")
    outs = {}
    for mode in translate.MODES:
        r = translate.video_files(str(src), str(out / f"toon_{mode}.mp4"), str(model), num_styles=1,
                                  style_seed=3, mode=mode, batch=8, overwrite=True, progress=progress)
        outs[mode] = np.concatenate(list(video.iter_frames(r.path, 64)))
        note(r.path.name, f"the clip translated frame by frame, {mode} style (seed 3): {r.frames} frames "
             f"{r.width}x{r.height} at {r.fps:g} fps, {r.frames_per_second:.0f} frames/s")
    params = lpips.lpips_params()
    inp = np.concatenate(list(video.iter_frames(src, 64)))
    squares = video.square_frames(inp, RESOLUTION)
    stab = {k: translate.consecutive_lpips(v, params) for k, v in {"input": squares, **outs}.items()}
    every = CLIP_FRAMES // 8
    note("video_frames.png", "Every {}th frame of the clip (top), translated with one fixed style (middle) and "
         "with drifting styles (bottom). Temporal stability, mean LPIPS between consecutive frames: input {:.3f}, "
         "fixed {:.3f}, drift {:.3f}.".format(every, stab["input"], stab["fixed"], stab["drift"]),
         show([squares[::every], outs["fixed"][::every], outs["drift"][::every]]))
    return write_report(out, "gafu demo gnr", lines, t0)
