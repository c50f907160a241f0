"""Projector speed: seconds per projection step with a config-f generator (random weights), float32.

    python benchmarks/project.py                               # 256 px, W+, 2 timed chunks of 2 steps
    python benchmarks/project.py --resolution 1024 --space w --chunk 1 --repeats 3
    python benchmarks/project.py --breakdown                   # also time G and LPIPS fwd+bwd alone

One step = synthesis forward + backward (w and every noise map), LPIPS-VGG16 on the 256 px (box-downsampled)
image, the noise regulariser, Adam and the noise renormalisation: exactly the jitted chunk `gafu project` runs
(interp.project.make_runner). The chunk is compiled once (timed separately), run once to warm up, then timed
`--repeats` times; the median per chunk divided by the chunk length is the step time. A reference run is
1000 steps (W, NV) or 500 (W+, Toonify), so a projection takes about that many times the step time.
The process's CPU seconds per step are reported too: on a shared machine they move less than the wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def _timed(fn, *args, repeats: int) -> float:
    import jax
    import numpy as np
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def run(resolution: int, w_plus: bool, chunk: int, repeats: int, conv_impl: str, breakdown: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from interp import project as P
    from nets import images, lpips, sampling
    from nets.stylegan2 import init_generator, preset

    cfg = preset("config-f", resolution=resolution, conv_impl=conv_impl)
    pc = P.ProjectConfig(steps=chunk * (repeats + 2), w_plus=w_plus, chunk=chunk)
    g = jax.tree.map(jnp.asarray, init_generator(cfg, jax.random.key(0)))
    lp = lpips.with_dx_kernels(jax.tree.map(jnp.asarray, lpips.lpips_params()))     # as P.project holds them
    target = np.random.RandomState(0).randint(0, 256, (1, resolution, resolution, 3)).astype(np.uint8)
    x = jnp.asarray(images.from_uint8(target))

    t = time.perf_counter()
    w_avg, w_std = P.w_stats(cfg, g, pc.w_avg_samples, w_plus)
    w_stats_s = time.perf_counter() - t
    consts = {"g": g, "lpips": lp, "target": P.lpips_featurizer(pc)(lp, x), "w_std": jnp.float32(w_std),
              "key": jax.random.key(1), "steps": jnp.int32(pc.steps)}
    k = cfg.num_ws if w_plus else 1
    var = {"w": jnp.broadcast_to(jnp.asarray(w_avg), (1, k, cfg.w_dim)) + 0.0,
           "noise": jax.tree.map(jnp.array, P.noise_maps(g))}
    run_chunk, adam = P.make_runner(cfg, pc)
    opt_state = adam.init(var)
    t = time.perf_counter()
    compiled = run_chunk.lower(var, opt_state, jnp.int32(0), consts).compile()
    compile_s = time.perf_counter() - t

    var, opt_state, d, _ = compiled(var, opt_state, jnp.int32(0), consts)     # warm-up
    d.block_until_ready()
    ts, cpu0 = [], time.process_time()
    for i in range(repeats):
        t = time.perf_counter()
        var, opt_state, d, _ = compiled(var, opt_state, jnp.int32((i + 1) * chunk), consts)
        d.block_until_ready()
        ts.append(time.perf_counter() - t)
    cpu_per_step = (time.process_time() - cpu0) / (repeats * chunk)
    out = dict(resolution=resolution, space="W+" if w_plus else "W", chunk=chunk, conv_impl=conv_impl,
               s_per_step=float(np.median(ts)) / chunk, cpu_s_per_step=cpu_per_step,
               chunk_times_s=[round(v, 3) for v in ts],
               compile_s=compile_s, w_stats_s=w_stats_s, lpips_final_step=float(d[-1]),
               device=str(jax.devices()[0].device_kind), cpus=os.cpu_count())
    if breakdown:   # the two halves alone (each compiles on its own)
        w = jnp.broadcast_to(var["w"], (1, cfg.num_ws, cfg.w_dim))
        g_grad = jax.jit(jax.grad(lambda w, g: jnp.sum(sampling.synthesize(cfg, g, w))))
        feats = lambda p, img: lpips.lpips_features(p, P.to_lpips_size(img, pc.lpips_size))
        l_grad = jax.jit(jax.grad(lambda img, p, t: lpips.lpips_from_features(p, feats(p, img), t)[0]))
        img = sampling.render_ws(cfg, g, w)
        out["g_fwd_bwd_s"] = _timed(g_grad, w, g, repeats=repeats)
        out["lpips_fwd_bwd_s"] = _timed(l_grad, img, lp, consts["target"], repeats=repeats)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--space", choices=["w", "w+"], default="w+")
    ap.add_argument("--chunk", type=int, default=2, help="steps per jitted call (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="timed chunks (default 2)")
    ap.add_argument("--conv-impl", default="auto", choices=["auto", "xla", "winograd"])
    ap.add_argument("--breakdown", action="store_true", help="also time G and LPIPS forward+backward alone")
    args = ap.parse_args()
    r = run(args.resolution, args.space == "w+", args.chunk, args.repeats, args.conv_impl, args.breakdown)
    print(json.dumps(r))
    steps = 500 if r["space"] == "W+" else 1000
    print(f"\n{r['resolution']} px config-f, {r['space']}, {r['device']}: {r['s_per_step']:.2f} s/step "
          f"(CPU {r['cpu_s_per_step']:.2f} s/step on {r['cpus']} cores; compile {r['compile_s']:.0f} s, "
          f"w stats {r['w_stats_s']:.1f} s) -> a {steps}-step projection "
          f"~{steps * r['s_per_step'] / 60:.0f} min")
    if "g_fwd_bwd_s" in r:
        print(f"  G fwd+bwd {r['g_fwd_bwd_s']:.2f} s, LPIPS fwd+bwd {r['lpips_fwd_bwd_s']:.2f} s per step")


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()
