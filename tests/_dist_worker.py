"""Worker of the 2-process test (tests/test_train_distributed.py): one of N processes on localhost.

argv: coordinator_port process_id num_processes out_dir. Each process has one CPU device and feeds its own
rows of the fixed global batch; process 0 writes the resulting state to out_dir/state.npz. Then all processes
run a 4-step `run()` with checkpoints and an EMA export in out_dir/run.
"""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(__file__))

port, pid, nproc, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

from train.parallel import init_distributed  # noqa: E402

init_distributed(f"127.0.0.1:{port}", nproc, pid)

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# A compile cache shared by the workers: run() below recompiles the step through jit's dispatch path, and with
# the cache that is a quick read in both processes (see the barrier below for why skew matters).
jax.config.update("jax_compilation_cache_dir", os.environ.get("GAFU_TEST_COMPILE_CACHE") or os.path.join(out, "cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def barrier(name: str, timeout_s: float = 900.0) -> None:
    """File barrier. gloo gives a peer only 30 s to join the first collective, and on a loaded 2-core machine
    one process can finish compiling much later than the other."""
    import time
    open(os.path.join(out, f"{name}.{pid}"), "w").close()
    deadline = time.time() + timeout_s
    while not all(os.path.exists(os.path.join(out, f"{name}.{i}")) for i in range(nproc)):
        if time.time() > deadline:
            raise TimeoutError(f"barrier {name}: the other processes did not arrive in {timeout_s} s")
        time.sleep(0.1)

from _train_common import faces, global_batch, init_host_state, mapped_step, split_interleaved, \
    step_config  # noqa: E402

from train.ckpt import state_to_tree  # noqa: E402
from train.config import apply_overrides  # noqa: E402
from train.loop import run  # noqa: E402
from train.parallel import put_batch, put_replicated, to_host  # noqa: E402

assert jax.process_count() == nproc and jax.device_count() == nproc, (jax.process_count(), jax.device_count())
cfg = step_config()
_, step, mesh = mapped_step(cfg, "shard_map", tuple(jax.devices()))
state = put_replicated(init_host_state(cfg), mesh)
rows = split_interleaved(global_batch(cfg), jax.device_count())[pid:pid + 1]    # [1, n, R, R, C]: my device
batch = put_batch({"image": rows}, mesh, "shard_map")
seed = put_replicated(np.uint32(cfg.seed), mesh)
compiled = step.lower(state, batch, seed, None).compile()
barrier("compiled")
new, metrics = compiled(state, batch, seed, None)
host = to_host(state_to_tree(new))
if pid == 0:
    flat = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(host)[0]}
    np.savez(os.path.join(out, "state.npz"), **flat)

# Same family section as the step above, so run() reuses its executable.
run_cfg = apply_overrides(cfg, ["steps=4", "ckpt_every=2", "export_every=4", "sample_every=0"])
res = run(run_cfg, os.path.join(out, "run"), data=faces(8), progress=False, log=lambda s: None)
assert res.status == "done" and res.last_checkpoint == 4, res
print(f"worker {pid} ok", flush=True)
