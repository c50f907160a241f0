"""The per-device step: pmap == shard_map, 8 devices == 1 device on the same global batch, and what one step
does to the state. One tiny 8 px config (tests/_train_common.py), so each device layout compiles once."""
import jax
import numpy as np
import pytest

from _train_common import global_batch, init_host_state, mapped_step, split_interleaved, step_config
from train.ckpt import state_to_tree
from train.config import apply_overrides, preset
from train.loop import step_programs
from train.parallel import to_host


@pytest.fixture(scope="session")
def step_setup():
    cfg = step_config()
    return cfg, init_host_state(cfg), global_batch(cfg)


_results: dict = {}


def one_step(setup, mode: str, num_devices: int):
    """(state, metrics) on host after one step from the initial state (step 0: every phase runs)."""
    key = (mode, num_devices)
    if key not in _results:
        cfg, state0, x = setup
        call, _, _ = mapped_step(cfg, mode, tuple(jax.devices()[:num_devices]))
        _results[key] = to_host(call(state0, split_interleaved(x, num_devices)))
    return _results[key]


def max_diffs(a, b) -> dict[str, float]:
    ta, tb = state_to_tree(a[0]), state_to_tree(b[0])
    flat = jax.tree_util.tree_flatten_with_path(ta)[0]
    out = {jax.tree_util.keystr(p): float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
           for (p, x), y in zip(flat, jax.tree.leaves(tb))}
    out.update({k: abs(float(a[1][k]) - float(b[1][k])) for k in a[1]})
    return out


@pytest.mark.slow    # ~40-85 s on 2 cores: keeps the default tier under 10 min in CI
def test_pmap_and_shard_map_give_the_same_step(step_setup):
    assert len(jax.devices()) == 8
    d = max_diffs(one_step(step_setup, "shard_map", 8), one_step(step_setup, "pmap", 8))
    worst = max(d, key=d.get)
    assert d[worst] <= 1e-6, (worst, d[worst])


def test_eight_devices_give_the_same_update_as_one(step_setup):
    d = max_diffs(one_step(step_setup, "shard_map", 8), one_step(step_setup, "shard_map", 1))
    worst = max(d, key=d.get)
    assert d[worst] <= 1e-5, (worst, d[worst])


def test_first_step_runs_every_phase_and_updates_the_state(step_setup):
    cfg, s0, _ = step_setup
    s1, m = one_step(step_setup, "shard_map", 8)
    assert int(s1.step) == 1
    assert m["finite"] and m["did_g_reg"] == 1.0 and m["did_d_reg"] == 1.0
    assert m["reg/r1"] > 0 and m["reg/pl"] > 0
    # Path-length mean after the first step: lerp(0, mean length, 0.01) > 0, as reported.
    assert float(s1.pl_mean) == pytest.approx(float(m["pl_mean"])) and float(s1.pl_mean) > 0
    # With EMA ramp-up, beta = 0 at the first step: the EMA is exactly the updated G.
    for e, g in zip(jax.tree.leaves(s1.g_ema), jax.tree.leaves(s1.g)):
        np.testing.assert_array_equal(e, g)
    changed = lambda a, b: [float(np.max(np.abs(x - y))) > 0 for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]  # noqa: E731
    assert all(changed(s1.d["params"]["b4"], s0.d["params"]["b4"]))
    assert all(changed(s1.g["params"]["mapping"], s0.g["params"]["mapping"]))
    # w_avg moved from 0 towards the batch mean of w by (1 - 0.995); the noise maps did not change.
    w_avg = s1.g["buffers"]["mapping"]["w_avg"]
    assert 0 < float(np.abs(w_avg).max()) < 0.1
    np.testing.assert_array_equal(s1.g["buffers"]["synthesis"]["b8"]["conv0"]["noise_const"],
                                  s0.g["buffers"]["synthesis"]["b8"]["conv0"]["noise_const"])
    # ADA: p is updated only at the end of each 4-step interval; the sign statistics accumulated.
    assert float(s1.ada_p) == 0.0 and float(s1.ada_acc[1]) == cfg.batch


def test_the_step_is_a_pure_function_of_state_and_batch(step_setup):
    cfg, state0, x = step_setup
    call, _, _ = mapped_step(cfg, "shard_map", tuple(jax.devices()))
    again = to_host(call(state0, split_interleaved(x, 8)))
    d = max_diffs(one_step(step_setup, "shard_map", 8), again)
    assert max(d.values()) == 0.0
    # A different step number draws different latents, noise and augmentations.
    later = to_host(call(state0.replace(step=np.int32(1)), split_interleaved(x, 8)))
    assert later[1]["loss/G"] != again[1]["loss/G"] and later[1]["did_d_reg"] == 0.0


@pytest.mark.parametrize("step", [0, 4, 1])            # path length and R1, path length only, neither
def test_phases_fixed_on_the_host_give_the_lax_cond_step(step_setup, step):
    """train.loop's 'host' dispatch (one program per pattern of due phases) == the one program whose lazy phases
    are lax.cond branches on the state's step, for each pattern NV's intervals produce."""
    cfg, state0, x = step_setup
    due = cfg.recipe.due(cfg.hparams, step)
    assert due == {0: ("pl", "r1"), 4: ("pl",), 1: ()}[step]
    state = state0.replace(step=np.int32(step))
    on_device = mapped_step(cfg, "shard_map", tuple(jax.devices()[:1]))[0]
    on_host = mapped_step(cfg, "shard_map", tuple(jax.devices()[:1]), due)[0]
    a, b = to_host(on_device(state, x[None])), to_host(on_host(state, x[None]))
    assert a[1]["did_g_reg"] == b[1]["did_g_reg"] == float("pl" in due)
    assert a[1]["did_d_reg"] == b[1]["did_d_reg"] == float("r1" in due)
    d = max_diffs(a, b)
    worst = max(d, key=d.get)
    assert d[worst] <= 1e-6, (worst, d[worst])


def test_the_loop_builds_one_program_per_pattern_of_due_phases():
    """Nothing is compiled here: step_programs only builds (cached) mapped steps."""
    cfg, devices = step_config(), tuple(jax.devices()[:1])
    at = step_programs(cfg, devices)
    assert len({id(at(s)) for s in range(64)}) == 3                         # (pl, r1), (pl,), ()
    assert at(0) is at(16) is at(48) and at(4) is at(8) and at(1) is at(15) and at(0) is not at(4)
    one = step_programs(cfg.replace(lazy_dispatch="device"), devices)
    assert len({id(one(s)) for s in range(64)}) == 1
    no_pl = step_programs(apply_overrides(cfg, ["loss.pl_weight=0"]), devices)
    assert len({id(no_pl(s)) for s in range(64)}) == 2 and no_pl(4) is no_pl(1)
    spade = step_programs(preset("spade-tiny"), devices)                    # a family without lazy phases
    assert len({id(spade(s)) for s in range(64)}) == 1
    with pytest.raises(ValueError, match="lazy_dispatch must be 'host' or 'device'; got 'cond'"):
        cfg.replace(lazy_dispatch="cond")
