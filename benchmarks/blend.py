"""Benchmark `gafu blend` on two config-f 256 px generators (30.0 M parameters, ~120 MB each).

Cold: a fresh process runs the CLI (`python -m nets.cli blend ...`: interpreter start, imports, load, blend, save).
Warm: a fresh process calls the library function behind it (interp.blend_files.blend_files) twice and the second
call is timed. Peak RSS is the child's ru_maxrss (os.wait4), next to a
baseline child that only imports what `gafu blend` imports. Setup (random init + saving both model files) is not
timed and is reused from --workdir when present.

  python benchmarks/blend.py [--workdir /tmp/gafu_blend_bench] [--modes toonify,toonify-smooth,swap,lerp]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"toonify": {"mode": "toonify", "resolution": 32},                # interp.blend_files.BlendSpec fields
         "toonify-smooth": {"mode": "toonify", "resolution": 32, "blend_width": 1.0},
         "swap": {"mode": "swap", "resolution": 64}, "lerp": {"mode": "lerp", "alpha": 0.5}}
WARM = """
import json, resource, sys, time
from interp.blend_files import BlendSpec, blend_files
low, high, spec = sys.argv[1], sys.argv[2], BlendSpec(**json.loads(sys.argv[3]))
t0 = time.perf_counter(); blend_files(low, high, sys.argv[4], spec, overwrite=True); t1 = time.perf_counter()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
blend_files(low, high, sys.argv[5], spec, overwrite=True); t2 = time.perf_counter()
print(json.dumps({"first_s": t1 - t0, "second_s": t2 - t1, "rss_after_first_kb": rss1}))
"""


def cli_flags(spec: dict) -> list[str]:
    """The `gafu blend` flags of a BlendSpec dict."""
    flag = {"toonify": ["--toonify", str(spec.get("resolution"))], "swap": ["--swap", str(spec.get("resolution"))],
            "lerp": ["--alpha", str(spec.get("alpha"))]}[spec["mode"]]
    return flag + (["--blend-width", str(spec["blend_width"])] if "blend_width" in spec else [])


def child(argv: list[str]) -> tuple[float, float, str]:
    """Run a child process; (wall seconds, peak RSS of exactly this child in MB via os.wait4, stdout)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out_f, err_f = (open(f"/tmp/.gafu_bench_{os.getpid()}.{s}", "w+") for s in ("out", "err"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out_f, stderr=err_f, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out_f.seek(0), err_f.seek(0)
    out, err = out_f.read(), err_f.read()
    for f in (out_f, err_f):
        f.close()
        os.unlink(f.name)
    if proc.returncode:
        raise RuntimeError(f"{argv} failed ({proc.returncode}):\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out


def setup(workdir: Path) -> tuple[Path, Path, float]:
    """Two random config-f 256 px generators as model files (reused if present); returns their paths and MB."""
    a, b = workdir / "g256_a", workdir / "g256_b"
    if not (a.exists() and b.exists()):
        script = ("import sys, jax\n"
                  "from nets.modelfile import save_model\n"
                  "from nets.stylegan2 import init_generator, preset\n"
                  "cfg = preset('config-f', resolution=256)\n"
                  "for i, p in enumerate(sys.argv[1:]):\n"
                  "    save_model(p, {'G': init_generator(cfg, jax.random.key(i))}, cfg, meta={'seed': i},"
                  " overwrite=True)\n")
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"creating {a} and {b} (not timed) ...", flush=True)
        child([sys.executable, "-c", script, str(a), str(b)])
    mb = sum(f.stat().st_size for f in (a / "variables").rglob("*") if f.is_file()) / 2 ** 20
    return a, b, mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/gafu_blend_bench")
    ap.add_argument("--modes", default="toonify,toonify-smooth,swap,lerp")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    a, b, mb = setup(workdir)
    import jax
    import numpy as np
    from nets.modelfile import load_model
    g = load_model(a).variables["G"]
    n_params = sum(int(np.size(x)) for x in jax.tree.leaves(g))
    n_mb = sum(np.asarray(x).nbytes for x in jax.tree.leaves(g)) / 2 ** 20
    del g
    _, base_rss, _ = child([sys.executable, "-c", "import jax, orbax.checkpoint, interp.blend_files;"
                                "jax.numpy.zeros(1).block_until_ready()"])
    print(f"inputs: 2 x {n_params / 1e6:.2f} M params = 2 x {n_mb:.0f} MB in memory ({mb:.0f} MB on disk each); "
          f"baseline RSS after imports: {base_rss:.0f} MB")
    print(f"{'mode':<16}{'cold s':>8}{'cold RSS MB':>13}{'warm s':>8}{'warm RSS MB':>13}")
    results = []
    for mode in args.modes.split(","):
        flags = ["blend", str(a), str(b), *cli_flags(MODES[mode]), "--overwrite"]
        cold_s, cold_rss, _ = child([sys.executable, "-m", "nets.cli", *flags, "--out", str(workdir / "out")])
        _, warm_rss, out = child([sys.executable, "-c", WARM, str(a), str(b), json.dumps(MODES[mode]),
                                  str(workdir / "out1"), str(workdir / "out2")])
        warm = json.loads(out.strip().splitlines()[-1])
        results.append({"mode": mode, "cold_s": cold_s, "cold_rss_mb": cold_rss, "warm_s": warm["second_s"],
                        "warm_first_s": warm["first_s"], "warm_rss_mb": warm_rss})
        print(f"{mode:<16}{cold_s:8.2f}{cold_rss:13.0f}{warm['second_s']:8.2f}{warm_rss:13.0f}", flush=True)
    print(json.dumps({"params": n_params, "input_mb": n_mb, "baseline_rss_mb": base_rss, "runs": results}))


if __name__ == "__main__":
    main()
