"""GANs N' Roses speed on this machine: seconds per training step and frames per second of `gafu gnr video`.

  python benchmarks/gnr_step.py                       # the release config: 256 px, batch 4 (one content group)
  python benchmarks/gnr_step.py --skip-step --frames 16
  python benchmarks/gnr_step.py --set loss.lambda_lpips=0

The step is benchmarks/spade_step.py's measurement (any training preset) on preset 'gnr': both directions, the
three discriminators, LPIPS-VGG, no R1 (it runs every 16th step, in its own program: --r1 times that step too).
Each step measurement runs in its own process (its own compile and peak RSS). The video is a
synthetic clip of the astronaut's face (datasets/demo.py heldout_clip) translated by a freshly initialised
release-size model with one fixed style, at --batch 1 and --batch 8 (each after a warm-up clip, so compiling
is not counted). The reference's step (mchong6/GANsNRoses train.py) is timed with its own code in a scratch
torch venv, outside this repository; see the README's Performance section.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def video_fps(frames: int, batches: list[int], resolution: int) -> dict[int, float]:
    """Frames per second of interp.gnr.video_files at each --batch, warm (one short clip translated first)."""
    import jax

    from datasets.demo import heldout_clip
    from interp import gnr as T
    from interp import video
    from nets import gnr, modelfile

    cfg = gnr.preset("gnr", resolution=resolution, num_down=4 if resolution >= 64 else 2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        v = gnr.init_model(cfg, jax.random.key(0))
        model = modelfile.save_model(tmp / "m", {"G": v["G"], "G_B2A": v["G_B2A"]}, cfg, arch="gnr")
        clip = tmp / "in.mp4"
        with video.VideoWriter(clip, 25.0) as w:
            for f in heldout_clip(resolution, frames):
                w.write(f)
        warm = tmp / "warm.mp4"
        with video.VideoWriter(warm, 25.0) as w:
            for f in heldout_clip(resolution, max(batches)):
                w.write(f)
        out = {}
        for b in batches:
            T.video_files(str(warm), str(tmp / f"w{b}.mp4"), str(model), batch=b, progress=False)
            t0 = time.perf_counter()
            r = T.video_files(str(clip), str(tmp / f"o{b}.mp4"), str(model), batch=b, progress=False)
            out[b] = r.frames / (time.perf_counter() - t0)
    return out


def step_subprocess(args: list[str]) -> dict:
    """benchmarks/spade_step.py in its own process (its own peak RSS), its JSON result line."""
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("spade_step.py")), *args], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    print(out, end="")
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", action="append", default=[], help="training config override a.b=value")
    p.add_argument("--repeats", type=int, default=3, help="timed training steps (after the warm-up)")
    p.add_argument("--frames", type=int, default=32, help="frames of the timed clip")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--r1", action="store_true", help="also time a step that takes the lazy R1 branch")
    p.add_argument("--skip-step", action="store_true", help="only the video")
    p.add_argument("--skip-video", action="store_true", help="only the training step")
    args = p.parse_args(argv)

    rows = []
    if not args.skip_step:
        sets = [f"model.resolution={args.resolution}"] + args.set
        for at_step, what in [(1, "training step")] + [(0, "R1 step")] * args.r1:
            r = step_subprocess(["--config", "gnr", "--batch", "4", "--repeats", str(args.repeats),
                                 "--at-step", str(at_step)] + [f"--set={s}" for s in sets])
            rows.append((f"{what}, batch 4 (s)", f"{r['s_per_step']:.2f}", f"runs {r['all']}, compile + first "
                         f"{r['compile_and_first_s']:.0f} s, CPU {r['cpu_s_per_step']:.0f} s/step, peak RSS "
                         f"{r['peak_rss_gb']:.1f} GB"))
    if not args.skip_video:
        fps = video_fps(args.frames, [1, 8], args.resolution)
        rows += [(f"gnr video --batch {b} (frames/s)", f"{v:.2f}", f"{args.frames} frames, 1 style")
                 for b, v in fps.items()]
    print(f"\nGANs N' Roses at {args.resolution} px on {os.cpu_count()} CPU cores")
    print(f"| {'measurement':<32} | {'value':>8} | notes")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 40}")
    for name, value, notes in rows:
        print(f"| {name:<32} | {value:>8} | {notes}")


if __name__ == "__main__":
    main()
