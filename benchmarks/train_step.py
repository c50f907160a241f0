"""Seconds per StyleGAN2 training step (G and D updated) and compile time, on the devices JAX sees.

Default: config-f widths (channel_base 32768, channel_max 512) at 64 px, global batch 8, one device: the case
timed for rosinality/stylegan2-pytorch `train.py` on this 2-core CPU (38.1 s/step, no R1/PL, no mixing, no
augmentation; see the README's Performance table). Three kinds of step are timed from the same state:
  plain   G main + D main              (state.step = 1: no lazy regularisation)
  g_reg   + path-length phase          (state.step = 4)
  both    + path length + R1 phases    (state.step = 0; happens every 16 steps)
and the amortised cost over 16 steps is reported too. As in training (train.loop.step_programs), each kind runs
its own program by default, compiled when first timed; `--lazy-dispatch device` times the single program with
lax.cond branches instead. Run it without XLA's fake-device flag:

  python benchmarks/train_step.py                        # 1 CPU device, config-f widths, 64 px, batch 8
  python benchmarks/train_step.py --resolution 32 --channel-base 512 --channel-max 32 --repeats 5

On CPU every wide conv runs as matmuls (nets/layers.py: Winograd, polyphase, im2col), forward and backward:
XLA:CPU's own conv weight gradients ran at ~1/4 of its forward rate (131 s/step before, 17.7 s after).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


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
    p.add_argument("--lazy-dispatch", choices=["host", "device"], default="host",
                   help="'host' (the trainer's default): one program per kind; 'device': one with lax.cond branches")
    p.add_argument("--conv-impl", choices=["auto", "xla", "winograd"], default="auto",
                   help="'xla' times XLA's own convs (and their gradients) instead of the matmul forms")
    args = p.parse_args(argv)

    import jax
    import numpy as np

    from train.config import apply_overrides, preset
    from train.loop import step_programs
    from train.parallel import make_mesh, put_batch, put_replicated, to_host

    cfg = apply_overrides(preset("config-f"), [
        f"model.resolution={args.resolution}", f"model.channel_base={args.channel_base}",
        f"model.channel_max={args.channel_max}", f"batch={args.batch}", f"parallel={args.parallel}",
        f"ada.enabled={str(args.ada).lower()}", f"model.conv_impl={args.conv_impl}",
        f"lazy_dispatch={args.lazy_dispatch}"]
        + (["loss.style_mixing=0"] if args.no_mixing else []))
    devices = tuple(jax.devices()[:args.devices])
    mesh = make_mesh(devices)
    rec, hp = cfg.recipe, cfg.hparams
    r = hp.model.resolution
    x = np.random.RandomState(0).uniform(-1, 1, (len(devices), cfg.batch // len(devices), r, r, 3))
    batch = put_batch({"image": x.astype(np.float32)}, mesh, cfg.parallel)
    seed = put_replicated(np.uint32(0), mesh)
    t0 = time.perf_counter()
    state = to_host(rec.init(hp, jax.random.key(0), None)[1])
    t_init = time.perf_counter() - t0
    step_at = step_programs(cfg, devices)
    states = {"plain": 1, "g_reg": 4, "both": 0}
    programs: dict[int, object] = {}        # id(mapped step) -> its compiled form ('device': one for all kinds)

    def placed(kind):
        return put_replicated(state.replace(step=np.int32(states[kind])), mesh)

    def compiled(kind):
        fn = step_at(states[kind])
        if id(fn) not in programs:
            t0 = time.perf_counter()
            if cfg.parallel == "shard_map":
                programs[id(fn)] = fn.lower(placed(kind), batch, seed, None).compile()
            else:
                jax.block_until_ready(fn(placed(kind), batch, seed, None))     # pmap compiles on first call
                programs[id(fn)] = fn
            res[f"{kind}_compile_s"] = round(time.perf_counter() - t0, 2)
            print(f"{kind}: compile {res[f'{kind}_compile_s']:.1f} s", flush=True)
        return programs[id(fn)]

    res = {"device": str(devices[0].device_kind), "num_devices": len(devices), "resolution": r,
           "batch": cfg.batch, "channel_base": args.channel_base, "channel_max": args.channel_max,
           "parallel": cfg.parallel, "lazy_dispatch": cfg.lazy_dispatch, "ada": args.ada,
           "mixing": not args.no_mixing, "conv_impl": args.conv_impl, "init_s": round(t_init, 2)}
    print(f"init {t_init:.1f} s, lazy phases dispatched on the {cfg.lazy_dispatch}", flush=True)
    for kind in args.kinds.split(","):
        s, call = placed(kind), compiled(kind)
        jax.block_until_ready(call(s, batch, seed, None))                   # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(call(s, batch, seed, None))
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
