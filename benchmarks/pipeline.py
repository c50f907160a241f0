"""Examples per second of the training input pipeline (datasets/pipeline.py) on this machine.

For each resolution it builds a dataset of real-photo crops (scikit-image's bundled images, PNG in array_record,
exactly what `gafu prepare-data folder` writes), then times `make_train_iter` reading it through tfds + grain,
and the same images from memory (`ArraySource`) for comparison. Nothing is downloaded.

    python benchmarks/pipeline.py                      # 64 and 256 px, batch 32, 2 threads
    python benchmarks/pipeline.py --resolutions 64 --threads 0 1 2 4 --seconds 5
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.builders import prepare_dataset  # noqa: E402
from datasets.pipeline import ArraySource, make_train_iter, open_source  # noqa: E402


def photo_crops(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """n random square crops (size px, from 300-512 px windows) of scikit-image's colour photos."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field(),
              data.immunohistochemistry(), data.retina()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        side = int(rng.integers(min(300, min(p.shape[:2])), min(p.shape[:2]) + 1))
        y, x = rng.integers(0, p.shape[0] - side + 1), rng.integers(0, p.shape[1] - side + 1)
        crop = Image.fromarray(p[y:y + side, x:x + side]).resize((size, size), Image.Resampling.LANCZOS)
        out.append(np.asarray(crop))
    return out


def rate(it, seconds: float, batch: int) -> tuple[float, float]:
    """(examples/s, ms per batch) over `seconds` after two warm-up batches."""
    next(it), next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += 1
    dt = time.perf_counter() - t0
    return n * batch / dt, 1e3 * dt / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--images", type=int, default=512, help="dataset size per resolution")
    ap.add_argument("--batch", type=int, default=32, help="global batch")
    ap.add_argument("--devices", type=int, default=1, help="num_local_devices of the batch layout")
    ap.add_argument("--threads", type=int, nargs="+", default=[2], help="grain reader threads (0 = no prefetch)")
    ap.add_argument("--seconds", type=float, default=4.0, help="timing window per measurement")
    args = ap.parse_args()

    print(f"pipeline benchmark: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"batch {args.batch}, {args.images} images")
    print(f"{'res':>5} {'source':>10} {'threads':>7} {'examples/s':>11} {'ms/batch':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for res in args.resolutions:
            from PIL import Image
            crops = photo_crops(args.images, res)
            src_dir = Path(tmp) / f"src{res}"
            src_dir.mkdir()
            for i, c in enumerate(crops):
                Image.fromarray(c).save(src_dir / f"{i:05d}.png", compress_level=1)
            t0 = time.perf_counter()
            prepare_dataset("folder", Path(tmp) / f"ds{res}", src=src_dir, resolution=res, workers=2, progress=False)
            build_s = time.perf_counter() - t0
            print(f"{res:5d} {'(build)':>10} {'2 proc':>7} {args.images / build_s:11.0f} {'':>9}   "
                  f"prepare-data folder: {args.images} images in {build_s:.1f} s")
            sources = {"tfds": open_source(Path(tmp) / f"ds{res}"), "memory": ArraySource(np.stack(crops))}
            for name, src in sources.items():
                for threads in args.threads:
                    it = make_train_iter(src, global_batch=args.batch, seed=0, num_local_devices=args.devices,
                                         num_threads=threads)
                    ex_s, ms = rate(it, args.seconds, args.batch)
                    it.close()
                    print(f"{res:5d} {name:>10} {threads:7d} {ex_s:11.0f} {ms:9.1f}")


if __name__ == "__main__":
    main()
