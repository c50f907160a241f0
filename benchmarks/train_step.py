"""Seconds per StyleGAN2 training step (G and D updated) and compile time, on the devices JAX sees.

Default: config-f widths (channel_base 32768, channel_max 512) at 64 px, global batch 8, one device, the
reference comparison of ../shared/docs/stylegan2.md §g.2 (PyTorch peer: 38.1 s/step on this 2-core CPU,
no R1/PL, no mixing, no augmentation). Three kinds of step are timed from the same state:
  plain   G main + D main              (state.step = 1: no lazy regularisation)
  g_reg   + path-length phase          (state.step = 4)
  both    + path length + R1 phases    (state.step = 0; happens every 16 steps)
and the amortised cost over 16 steps is reported too. Run it without XLA's fake-device flag:

  python benchmarks/train_step.py                        # 1 CPU device, config-f widths, 64 px, batch 8
  python benchmarks/train_step.py --resolution 32 --channel-base 512 --channel-max 32 --repeats 5
  python benchmarks/train_step.py --fast-wgrad        # experiment: conv weight gradients as matmuls

--fast-wgrad measures a proposed change to nets/layers.py: XLA:CPU computes convolution weight gradients very
slowly (a 3x3 512->512 wgrad at 64x64, batch 8: 9.4 s; of the x2 transposed conv: 50 s). Written as one matmul
per kernel tap (custom_vjp) they take 2.3 s and 2.5 s. The flag swaps nets.layers' `lax` for a proxy whose
conv_general_dilated has that gradient; the library itself is unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


DN = ("NHWC", "HWIO", "NHWC")


def _fast_wgrad_conv():
    """lax.conv_general_dilated (NHWC/HWIO, no groups) whose weight gradient is one matmul per kernel tap:
    dW[a,b] = sum_{n,p,q} xp[n, p*s+a, q*s+b]^T dy[n,p,q], xp the padded (and lhs-dilated) input."""
    import functools

    import jax
    import jax.numpy as jnp
    from jax import lax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
    def conv(x, w, strides, padding, dil):
        return lax.conv_general_dilated(x, w, strides, padding, lhs_dilation=dil, dimension_numbers=DN)

    def fwd(x, w, strides, padding, dil):
        return conv(x, w, strides, padding, dil), (x, w)

    def bwd(strides, padding, dil, res, dy):
        x, w = res
        _, vjp_x = jax.vjp(lambda v: lax.conv_general_dilated(v, w, strides, padding, lhs_dilation=dil,
                                                                dimension_numbers=DN), x)
        xp = lax.pad(x, jnp.zeros((), x.dtype),
                     [(0, 0, 0)] + [(lo, hi, d - 1) for (lo, hi), d in zip(padding, dil)] + [(0, 0, 0)])
        n, p, q, o = dy.shape
        taps = [lax.slice(xp, (0, a, b, 0), (n, a + strides[0] * (p - 1) + 1, b + strides[1] * (q - 1) + 1,
                                             x.shape[3]), (1, strides[0], strides[1], 1)).reshape(-1, x.shape[3]).T
                @ dy.reshape(-1, o) for a in range(w.shape[0]) for b in range(w.shape[1])]
        return vjp_x(dy)[0], jnp.stack(taps).reshape(w.shape)
    conv.defvjp(fwd, bwd)

    def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                             dimension_numbers=None, feature_group_count=1, **kw):
        plain = isinstance(padding, str) and padding != "VALID"
        if dimension_numbers != DN or feature_group_count != 1 or kw or plain or rhs_dilation not in (None, (1, 1)):
            return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                            feature_group_count=feature_group_count, **kw)
        pads = ((0, 0), (0, 0)) if padding == "VALID" else tuple(tuple(p) for p in padding)
        return conv(lhs, rhs, tuple(window_strides), pads, tuple(lhs_dilation or (1, 1)))
    return conv_general_dilated


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch", type=int, default=8, help="global batch")
    p.add_argument("--channel-base", type=int, default=32768)
    p.add_argument("--channel-max", type=int, default=512)
    p.add_argument("--devices", type=int, default=1, help="how many of the visible devices to use")
    p.add_argument("--parallel", choices=["shard_map", "pmap"], default="shard_map")
    p.add_argument("--ada", action="store_true", help="augment what D sees (off: as the PyTorch reference)")
    p.add_argument("--no-mixing", action="store_true", help="style mixing off (the reference had none)")
    p.add_argument("--repeats", type=int, default=2, help="timed steps per kind (after one warm-up)")
    p.add_argument("--kinds", default="plain,g_reg,both")
    p.add_argument("--fast-wgrad", action="store_true", help="experiment: matmul conv weight gradients")
    args = p.parse_args(argv)
    if args.fast_wgrad:
        import types

        import jax

        import nets.layers
        nets.layers.lax = types.SimpleNamespace(**{k: getattr(jax.lax, k) for k in dir(jax.lax)
                                                   if not k.startswith("__")})
        nets.layers.lax.conv_general_dilated = _fast_wgrad_conv()

    import jax
    import numpy as np

    from train.config import apply_overrides, preset
    from train.parallel import build_step, make_mesh, put_batch, put_replicated, to_host
    from train.state import init_state
    from train.step import static_config

    cfg = apply_overrides(preset("config-f"), [
        f"model.resolution={args.resolution}", f"model.channel_base={args.channel_base}",
        f"model.channel_max={args.channel_max}", f"batch={args.batch}", f"parallel={args.parallel}",
        f"ada.enabled={str(args.ada).lower()}"] + (["loss.style_mixing=0"] if args.no_mixing else []))
    devices = tuple(jax.devices()[:args.devices])
    mesh = make_mesh(devices)
    r = cfg.model.resolution
    x = np.random.RandomState(0).uniform(-1, 1, (len(devices), cfg.batch // len(devices), r, r, 3))
    batch = put_batch(x.astype(np.float32), mesh, cfg.parallel)
    t0 = time.perf_counter()
    state = to_host(init_state(cfg, jax.random.key(0)))
    t_init = time.perf_counter() - t0
    fn = build_step(static_config(cfg), cfg.parallel, devices)
    states = {"plain": 1, "g_reg": 4, "both": 0}

    def placed(kind):
        return put_replicated(state.replace(step=np.int32(states[kind])), mesh)

    t0 = time.perf_counter()
    if cfg.parallel == "shard_map":
        compiled = fn.lower(placed("both"), batch).compile()
        t_compile = time.perf_counter() - t0
        call = compiled
    else:
        jax.block_until_ready(fn(placed("both"), batch))     # pmap compiles on first call
        t_compile = time.perf_counter() - t0
        call = fn
    res = {"device": str(devices[0].device_kind), "num_devices": len(devices), "resolution": r,
           "batch": cfg.batch, "channel_base": args.channel_base, "channel_max": args.channel_max,
           "parallel": cfg.parallel, "ada": args.ada, "mixing": not args.no_mixing, "fast_wgrad": args.fast_wgrad,
           "init_s": round(t_init, 2), "compile_s": round(t_compile, 2)}
    print(f"compile {t_compile:.1f} s (init {t_init:.1f} s)", flush=True)
    for kind in args.kinds.split(","):
        s = placed(kind)
        jax.block_until_ready(call(s, batch))                   # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(call(s, batch))
            times.append(time.perf_counter() - t0)
        res[f"{kind}_s_per_step"] = round(statistics.median(times), 2)
        res[f"{kind}_all"] = [round(t, 2) for t in times]
        print(f"{kind}: {statistics.median(times):.2f} s/step (runs {res[f'{kind}_all']})", flush=True)
    if all(f"{k}_s_per_step" in res for k in states):
        # Over 16 steps: 1 'both' step, 3 more with path length, 12 plain.
        res["amortised_s_per_step"] = round((res["both_s_per_step"] + 3 * res["g_reg_s_per_step"]
                                             + 12 * res["plain_s_per_step"]) / 16, 2)
        res["img_per_s"] = round(cfg.batch / res["amortised_s_per_step"], 3)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
