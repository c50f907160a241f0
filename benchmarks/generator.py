"""Generator forward throughput: config-f widths, float32, non-fused vs fused modulated conv.

    python benchmarks/generator.py                 # 64 px batch 8 and 256 px batch 4, both forms
    python benchmarks/generator.py --cases 64:8:nonfused:xla,64:8:nonfused:winograd --repeats 10

Each case runs in a fresh subprocess (so compile time and peak RSS are its own): jit once, 2 warm-up calls,
then the median of `--repeats` timed calls. A plain 3x3 conv at N=8, 32x32, 512->512 is timed first: the
machine's current conv rate, from which the img/s ceiling of each case follows (an analytic FLOP count of
config-f, 1 MAC = 2 FLOP, up-convs counted as the transposed conv computes them: 32.4 GFLOP per 64 px image, 90.9
per 256 px image; torch's FlopCounterMode on rosinality's ops agrees within 0.5 %). The reference PyTorch implementation
(rosinality, 2-core CPU of this kind, quiet machine) did 2.31 img/s (64 px b8) and 0.88 img/s (256 px b4).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

GFLOP_PER_IMG = {64: 32.4, 128: 62.7, 256: 90.9}     # analytic, as above (128 interpolated)
REFERENCE = {(64, 8): 2.31, (256, 4): 0.876}          # rosinality, fused (its default), img/s


def _conv_rate() -> float:
    import jax
    import jax.numpy as jnp
    from jax import lax
    x, w = jnp.ones((8, 32, 32, 512)), jnp.ones((3, 3, 512, 512)) * 0.01
    f = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC")))
    f(x, w).block_until_ready()
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        f(x, w).block_until_ready()
        ts.append(time.perf_counter() - t)
    return 8 * 32 * 32 * 512 * 512 * 18 / 1e9 / sorted(ts)[2]


def run_case(res: int, batch: int, form: str, impl: str, repeats: int) -> dict:
    import jax
    import numpy as np

    from nets.stylegan2 import Generator, init_generator, preset
    cfg = preset("config-f", resolution=res, fused_modconv=(form == "fused"), conv_impl=impl)
    g = init_generator(cfg, jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (batch, cfg.z_dim))
    fn = jax.jit(lambda g, z, k: Generator(cfg).apply(g, z, noise_mode="random", rngs={"noise": k}))
    t0 = time.perf_counter()
    compiled = fn.lower(g, z, jax.random.key(2)).compile()
    compile_s = time.perf_counter() - t0
    for i in range(2):
        compiled(g, z, jax.random.key(i)).block_until_ready()
    ts = []
    for i in range(repeats):
        t = time.perf_counter()
        compiled(g, z, jax.random.key(10 + i)).block_until_ready()
        ts.append(time.perf_counter() - t)
    med = float(np.median(ts))
    return dict(res=res, batch=batch, form=form, impl=impl, s_per_batch=med, img_s=batch / med, compile_s=compile_s,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="64:8:nonfused,64:8:fused,256:4:nonfused,256:4:fused",
                    help="comma-separated RES:BATCH:FORM[:IMPL] (FORM nonfused|fused; IMPL auto|xla|winograd)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        res, batch, form, impl = (args.one.split(":") + ["auto"])[:4]
        print(json.dumps(run_case(int(res), int(batch), form, impl, args.repeats)))
        return
    rate = _conv_rate()
    print(f"machine now: plain 3x3 conv (N8 32x32 512->512) at {rate:.0f} GFLOP/s; jax "
          f"{__import__('jax').__version__}, {os.cpu_count()} CPUs\n")
    hdr = f"| {'case':<27} | {'img/s':>6} | {'s/batch':>7} | {'compile s':>9} | {'peak RSS MB':>11} | " \
          f"{'ceiling img/s':>13} | {'vs reference':>12} |"
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for case in args.cases.split(","):
        res, batch, form, impl = (case.split(":") + ["auto"])[:4]
        out = subprocess.run([sys.executable, __file__, "--one", case, "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ceiling = rate / GFLOP_PER_IMG.get(r["res"], float("nan"))
        ref = REFERENCE.get((r["res"], r["batch"]))
        vs = f"{r['img_s'] / ref:.2f}x" if ref else "-"
        name = f"{res} px b{batch} {form} {impl}"
        print(f"| {name:<27} | {r['img_s']:6.2f} | {r['s_per_batch']:7.3f} | {r['compile_s']:9.1f} | "
              f"{r['peak_rss_mb']:11.0f} | {ceiling:13.2f} | {vs:>12} |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()
