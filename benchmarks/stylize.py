"""Style-transfer iteration cost: seconds per iteration at 256 and 512 px, Adam vs L-BFGS (VGG-16, float32).

    python benchmarks/stylize.py                  # 256 and 512 px: adam, lbfgs (no line search), lbfgs-zoom
    python benchmarks/stylize.py --cases 256:lbfgs --iters 10
    python benchmarks/stylize.py --torch-python /path/to/venv/bin/python   # + the PyTorch reference, same run

Loss: the Gatys preset's layers (relu4_2 content, relu1_1..relu5_1 styles, avg pool, TV) for both optimisers, so
the optimiser is the only difference. Content chelsea, style hubble_deep_field (skimage), long side = the size.
Each case runs in a fresh subprocess (its own compile time and peak RSS): jit once, 2 warm-up iterations, then
`--iters` timed iterations; the median is reported. `lbfgs` is L-BFGS with unit steps (the gatys preset's
default, as neural-style), one loss+gradient evaluation per iteration; `lbfgs-zoom` adds optax's zoom line search
(the mean count of its steps per iteration is reported).

With torch importable (or `--torch-python` naming an interpreter that has it: `pip install 'gafu[torch]'`), each
adam / lbfgs case is followed by `benchmarks/stylize_torch.py` on an image of the same size (plain nn.Conv2d
VGG-16, same loss), and the table gets its time and the ratio gafu / PyTorch.

"convs alone" is the float32 floor of the step on this machine (`convs_alone_s`): its 22 convolutions (forward and
input gradient of conv1_1..conv5_1), each timed alone with XLA's conv and summed, as if every other op were free.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def run_case(size: int, optimizer: str, iters: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from skimage import data

    from interp import stylize as S
    from nets import vgg

    opt, _, ls = optimizer.partition("-")
    cfg = S.PRESETS["gatys"].replace(optimizer=opt, size=size, lr=4.0, linesearch=ls or "none")
    params = vgg.with_dx_kernels(jax.device_put(vgg.vgg16_imagenet_params()))   # as S.stylize does
    c = jnp.asarray(S.resize_long(data.chelsea(), size))[None]
    s = jnp.asarray(S.resize_long(data.hubble_deep_field(), size))[None]
    tgt = jax.jit(lambda p, c, s: S.targets(p, c, [s], [1.0], cfg))(params, c, s)
    img = 120.0 + jax.random.uniform(jax.random.key(0), c.shape, minval=-20, maxval=20)
    state = jax.tree.map(jnp.copy, S.make_optimizer(cfg).init(img))
    step = S.make_step(cfg)
    t0 = time.perf_counter()
    compiled = step.lower(img, state, params, tgt).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(2):
        img, state, loss = compiled(img, state, params, tgt)
    loss.block_until_ready()
    ts, ls_steps = [], []
    for _ in range(iters):
        t = time.perf_counter()
        img, state, loss = compiled(img, state, params, tgt)
        loss.block_until_ready()
        ts.append(time.perf_counter() - t)
        if ls == "zoom":
            info = optax.tree_utils.tree_get(state, "info")
            ls_steps.append(int(info.num_linesearch_steps))
    return dict(size=size, hw=list(c.shape[1:3]), optimizer=optimizer, s_per_iter=float(np.median(ts)),
                convs_alone_s=convs_alone_s(params, c.shape[1:3]), compile_s=compile_s,
                linesearch_steps=float(np.mean(ls_steps)) if ls_steps else None,
                loss=float(loss), peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def convs_alone_s(params: dict, hw: tuple[int, int], repeats: int = 15) -> float:
    """The step's floor in float32 on this machine: the sum, over the step's convs (VGG-16 up to conv5_1), of each
    forward and each input-gradient conv timed alone (XLA's conv, the kernel flip formed beforehand; the best of
    `repeats` calls), with nothing else of the step (ReLUs, pools, Grams, the optimiser)."""
    import jax
    import numpy as np

    from nets import layers, vgg

    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    (h, w), total, names = hw, 0.0, vgg.conv_names("vgg16")
    for name in names[:names.index("conv5_1") + 1]:
        k = params[name]["kernel"]
        for x, kk in ((np.ones((1, h, w, k.shape[2]), np.float32), k),                # forward
                      (np.ones((1, h, w, k.shape[3]), np.float32), layers.dx_kernel(k))):   # dx
            conv(x, kk).block_until_ready()
            best = np.inf
            for _ in range(repeats):
                t = time.perf_counter()
                conv(x, kk).block_until_ready()
                best = min(best, time.perf_counter() - t)
            total += best
        if name.endswith(f"_{vgg.BLOCKS['vgg16'][int(name[4]) - 1][1]}"):     # the block's last conv: 2x2 pool
            h, w = h // 2, w // 2
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="256:adam,256:lbfgs,256:lbfgs-zoom,512:adam,512:lbfgs,512:lbfgs-zoom",
                    help="comma-separated SIZE:OPT, OPT in adam | lbfgs | lbfgs-zoom")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--torch-python", help="python with torch for the reference column (default: this one, "
                                           "if it has torch)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        size, opt = args.one.split(":")
        print(json.dumps(run_case(int(size), opt, args.iters)))
        return
    import importlib.util

    import jax
    torch_py = args.torch_python or (sys.executable if importlib.util.find_spec("torch") else None)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}; PyTorch reference: {torch_py or 'none (no torch)'}\n")
    hdr = f"| {'case':<18} | {'image':>9} | {'s/iter':>7} | {'PyTorch s/iter':>14} | {'gafu/PyTorch':>12} | " \
          f"{'convs alone s':>13} | {'convs alone/PyTorch':>19} | {'line-search steps/iter':>22} | " \
          f"{'compile s':>9} | {'peak RSS MB':>11} |"
    print(hdr)
    print("|" + "|".join("-" * len(c) for c in hdr.split("|")[1:-1]) + "|")
    for case in args.cases.split(","):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", case, "--iters", str(args.iters)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {case:<18} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ls = f"{r['linesearch_steps']:.1f}" if r["linesearch_steps"] is not None else "-"
        ref = torch_time(torch_py, r["hw"], r["optimizer"], args.iters) if torch_py else None
        ref_s, ratio, floor = ("-", "-", "-") if ref is None else (
            f"{ref:.3f}", f"{r['s_per_iter'] / ref:.2f}", f"{r['convs_alone_s'] / ref:.2f}")
        print(f"| {r['size']:>4} px {r['optimizer']:<10} | {r['hw'][1]:>4}x{r['hw'][0]:<4} | {r['s_per_iter']:7.3f} | "
              f"{ref_s:>14} | {ratio:>12} | {r['convs_alone_s']:13.3f} | {floor:>19} | {ls:>22} | "
              f"{r['compile_s']:9.1f} | {r['peak_rss_mb']:11.0f} |", flush=True)


def torch_time(python: str, hw: list[int], optimizer: str, iters: int) -> float | None:
    """stylize_torch.py's seconds per iteration on an image of the same size (None for lbfgs-zoom: no twin)."""
    if optimizer not in ("adam", "lbfgs"):
        return None
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stylize_torch.py")
    out = subprocess.run([python, script, "--size", f"{hw[0]}x{hw[1]}", "--optimizer", optimizer,
                          "--iters", str(iters)], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"PyTorch reference failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["s_per_iter"]


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()
