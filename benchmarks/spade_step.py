"""Seconds per SPADE training step (a G step and a D step, NVlabs' iteration) and compile time.

Default: the AnimeFace recipe (preset 'spade-anime': 256 px, layout 'more', ngf 64, PatchGAN, hinge + L1 x 100 +
VGG x 10) at batch 4 on one device, the case compared with imoken1122/SPADE-AnimeFace's PyTorch step on this CPU
(see the README's Performance table). Any preset and `--set` overrides (train/config.py grammar) work:

  python benchmarks/spade_step.py                                   # spade-anime, 256 px, batch 4
  python benchmarks/spade_step.py --config spade-tiny --repeats 5
  python benchmarks/spade_step.py --set loss.lambda_vgg=0           # without the perceptual loss
  python benchmarks/spade_step.py --config gnr --memory              # XLA's memory plan of the step, not run
  python benchmarks/spade_step.py --config gnr --at-step 0            # a step that takes the lazy R1 branch

Every timed call starts from the same state; its step counter is --at-step (default 1, so lazy regularisers that
run on steps divisible by their interval are not taken), and it runs the program training runs at that step
(`--set lazy_dispatch=device`: the single program with lax.cond branches).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="spade-anime", help="training preset (default spade-anime)")
    p.add_argument("--batch", type=int, default=4, help="global batch (default 4, AnimeFace's)")
    p.add_argument("--set", action="append", default=[], help="config override a.b=value (repeatable)")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed steps (after one warm-up)")
    p.add_argument("--at-step", type=int, default=1, help="the state's step counter for every timed call (default "
                   "1: lazy regularisers such as R1 every 16 steps are not taken; 0 takes them)")
    p.add_argument("--memory", action="store_true", help="compile only (shard_map) and print XLA's memory plan "
                   "of the step: arguments, outputs and the temporaries' peak (no step is run)")
    args = p.parse_args(argv)
    if args.memory:
        args.set = args.set + ["parallel=shard_map"]

    import jax
    import numpy as np

    from train.config import apply_overrides, preset
    from train.loop import step_programs
    from train.parallel import make_mesh, put_batch, put_replicated, to_host

    cfg = apply_overrides(preset(args.config), [f"batch={args.batch}"] + args.set)
    devices = tuple(jax.devices()[:args.devices])
    mesh = make_mesh(devices)
    rec, hp = cfg.recipe, cfg.hparams
    rng = np.random.RandomState(0)
    rows = {k: rng.uniform(-1, 1, (len(devices), cfg.batch // len(devices)) + shape).astype(np.float32)
            for k, shape in rec.example_shapes(hp).items()}
    batch = put_batch(rows, mesh, cfg.parallel)
    seed = put_replicated(np.uint32(0), mesh)
    t0 = time.perf_counter()
    state = to_host(rec.init(hp, jax.random.key(0), None)[1])
    state = put_replicated(state.replace(step=np.asarray(args.at_step, state.step.dtype)), mesh)
    frozen = rec.frozen(hp)
    frozen = None if frozen is None else put_replicated(frozen, mesh)
    t_init = time.perf_counter() - t0
    fn = step_programs(cfg, devices)(args.at_step)                               # the program training runs there
    t0 = time.perf_counter()
    call = fn.lower(state, batch, seed, frozen).compile() if cfg.parallel == "shard_map" else fn
    t_lower = time.perf_counter() - t0                                             # trace + compile (shard_map)
    if args.memory:
        m = call.memory_analysis()
        res = {"config": args.config, "sets": args.set, "compile_s": round(t_lower, 1),
               **{k: round(getattr(m, f"{k}_size_in_bytes") / 2 ** 30, 3) for k in
                  ("argument", "output", "temp", "generated_code")}}
        print(f"{args.config} batch {cfg.batch}: temporaries {res['temp']:.2f} GiB, arguments {res['argument']:.2f} "
              f"GiB, outputs {res['output']:.2f} GiB (compile {t_lower:.0f} s)")
        print(json.dumps(res))
        return res
    jax.block_until_ready(call(state, batch, seed, frozen))                        # warm-up (pmap compiles here)
    t_compile = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(call(state, batch, seed, frozen))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    res = {"config": args.config, "sets": args.set, "resolution": hp.model.resolution, "batch": cfg.batch,
           "at_step": args.at_step,
           "num_devices": len(devices), "device": str(devices[0].device_kind), "init_s": round(t_init, 2),
           "compile_s": round(t_lower, 2) if cfg.parallel == "shard_map" else None,
           "compile_and_first_s": round(t_compile, 2), "s_per_step": round(statistics.median(times), 3),
           "all": [round(t, 3) for t in times], "cpu_s_per_step": round(statistics.median(cpu), 3),
           "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}
    print(f"{args.config} {hp.model.resolution}px batch {cfg.batch}: {res['s_per_step']:.3f} s/step "
          f"(runs {res['all']}; process CPU {res['cpu_s_per_step']:.1f} s/step), compile + first step "
          f"{t_compile:.1f} s, peak RSS {res['peak_rss_gb']:.1f} GB")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
