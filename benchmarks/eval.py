"""Evaluation throughput: FID-Inception images per second at 299 px, and the time of an FID of a tiny model.

    python benchmarks/eval.py                        # batches 8 and 32, then fid10k of a random tiny model
    python benchmarks/eval.py --batches 16 --num 1000 --model runs/demo/ema --data data/demo32

Random Inception weights (the shapes, hence the time, are those of pytorch-fid's network). The Inception rate is
the median of `--repeats` timed calls after one warm-up (compile excluded). The FID line runs `gafu eval`'s code
path (fakes rendered and embedded in batches of 64 on all local devices, reals read, embedded and cached, the
Fréchet distance) with a fresh statistics cache, and reports wall time with compiles; without --model it uses
a random `tiny` 32 px StyleGAN2 and, without --data, the bundled demo faces built on the fly.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def inception_rate(batch: int, repeats: int) -> float:
    import numpy as np

    from nets import inception
    from train.eval.stats import Embedder

    emb = Embedder(lambda v, x: inception.FIDInception().apply(v, x), inception.init_variables(0), batch)
    x = np.random.RandomState(0).randint(0, 256, (emb.batch, 299, 299, 3)).astype(np.uint8)
    emb(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        emb(x)
        times.append(time.perf_counter() - t)
    return emb.batch / statistics.median(times)


def fid_time(num: int, model: str | None, data: str | None, tmp: Path) -> tuple[float, float, int]:
    import jax

    from nets import inception, inception_weights, modelfile, stylegan2
    from train.eval import fakes, run

    os.environ["GAFU_EVAL_CACHE"] = str(tmp / "cache")
    if model is None:
        cfg = stylegan2.preset("tiny")
        model = str(tmp / "tiny")
        modelfile.save_model(model, stylegan2.init_model(cfg, jax.random.key(0)), cfg)
    if data is None:
        from datasets.builders import prepare_dataset
        data = str(tmp / "demo")
        prepare_dataset("demo", data, resolution=32, progress=False)      # = gafu prepare-data demo
    weights = inception_weights.save_npz(inception.init_variables(0), tmp / "inc.npz", "random")
    t = time.time()
    specs = run.parse_metrics("fid10k", num)
    ev = run.make_evaluator(fakes.load(model), data, specs, inception=str(weights), any_inception=True,
                            split="trainA" if data.endswith("demo") else None, progress=False, log=lambda s: None)
    rec = run.evaluate(ev, specs)[0]
    return time.time() - t, rec["results"]["fid10k"], rec["num_real"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num", type=int, default=10000, help="fakes of the FID line (fid10k: 10000)")
    ap.add_argument("--model")
    ap.add_argument("--data")
    a = ap.parse_args()
    import jax
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.default_backend()} devices, {os.cpu_count()} cpus")
    print("| case | value |\n|---|---|")
    for b in (int(s) for s in a.batches.split(",")):
        print(f"| Inception 299 px, batch {b} | {inception_rate(b, a.repeats):.2f} img/s |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        secs, fid, nreal = fid_time(a.num, a.model, a.data, Path(tmp))
    print(f"| fid of {a.num} fakes vs {nreal} reals ({'random tiny 32 px' if a.model is None else a.model}) | "
          f"{secs:.1f} s (FID {fid:.2f}) |")


if __name__ == "__main__":
    main()
