"""Multi-process data parallelism for real: two processes on localhost form one JAX cluster
(jax.distributed.initialize with gloo CPU collectives), each feeding its own rows of the global batch, and
produce the same update as one process with the whole batch. Both then run a short `run()` together
(checkpoints written by both, EMA export by process 0)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from _train_common import global_batch, init_host_state, mapped_step, split_interleaved, step_config
from train.ckpt import state_to_tree
from train.parallel import to_host

TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow    # ~40-85 s on 2 cores: keeps the default tier under 10 min in CI
def test_two_processes_give_the_same_update_as_one(tmp_path):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]),
               GAFU_TEST_COMPILE_CACHE=jax.config.jax_compilation_cache_dir or "")
    env.pop("XLA_FLAGS", None)
    worker = str(Path(__file__).parent / "_dist_worker.py")
    procs = [subprocess.Popen([sys.executable, worker, str(port), str(i), "2", str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0 and f"worker {i} ok" in out, out[-4000:]

    # The same step in this process, one device, whole batch.
    cfg = step_config()
    call, _, _ = mapped_step(cfg, "shard_map", tuple(jax.devices()[:1]))
    ref = to_host(state_to_tree(call(init_host_state(cfg), split_interleaved(global_batch(cfg), 1))[0]))
    got = np.load(tmp_path / "state.npz")
    flat = jax.tree_util.tree_flatten_with_path(ref)[0]
    assert sorted(got.files) == sorted(jax.tree_util.keystr(p) for p, _ in flat)
    worst = max((float(np.max(np.abs(got[jax.tree_util.keystr(p)] - np.asarray(v)))), jax.tree_util.keystr(p))
                for p, v in flat)
    assert worst[0] <= 1e-5, worst
    assert int(got["['step']"]) == 1

    run_dir = tmp_path / "run"
    assert sorted(int(p.name) for p in (run_dir / "ckpt").iterdir() if p.name.isdigit()) == [2, 4]
    assert (run_dir / "ema" / "gafu.json").is_file()
