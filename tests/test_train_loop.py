"""The training loop on bundled data (scikit-image's LFW faces at 16 px) through the real input pipeline
(datasets.pipeline.make_batches): outputs, exact resume, the NaN stop, SIGKILL during a save, fine-tuning, and
`gafu train` on a dataset built by `gafu prepare-data`. Every run here has the same family section, so they share
one compiled step."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from _train_common import faces as bundled_faces, make_config
from datasets import pipeline
from nets import cli
from nets.modelfile import save_model
from nets.sampling import load_generator, render
from train.ckpt import Checkpoints, abstract_state, read_pretrained, state_to_tree
from train.logs import read_metrics
from train.loop import run
from train.parallel import make_mesh, replicated, to_host

QUIET = dict(progress=False, log=lambda s: None)


@pytest.fixture(scope="module")
def faces():
    return bundled_faces(16)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, faces):
    """The uninterrupted 30-step run."""
    wd = tmp_path_factory.mktemp("full")
    res = run(make_config("steps=30"), wd, data=faces, **QUIET)
    return res, wd


def restore(wd: Path, step: int | None = None):
    ck = Checkpoints(wd / "ckpt")
    try:
        cfg = make_config()
        state, data, saved_cfg = ck.restore(abstract_state(cfg), replicated(make_mesh()), step)
        return to_host(state), data, saved_cfg
    finally:
        ck.close()


def test_tiny_run_writes_checkpoints_metrics_samples_and_an_ema_model(full_run):
    res, wd = full_run
    assert (res.status, res.step, res.last_checkpoint) == ("done", 30, 30)
    assert json.loads((wd / "config.json").read_text())["steps"] == 30
    assert sorted(int(p.name) for p in (wd / "ckpt").iterdir() if p.name.isdigit()) == [20, 30]   # keep=2
    lines = read_metrics(wd)
    assert [m["step"] for m in lines] == [10, 20, 30]
    for m in lines:
        assert all(np.isfinite(v) for k, v in m.items() if k != "step")
        assert m["kimg"] == pytest.approx(m["step"] * 32 / 1000) and m["img_per_s"] > 0
    assert "reg/r1" in lines[0] and "reg/pl" in lines[0]         # R1 ran at step 0, PL every 4 steps
    assert lines[-1]["ada/p"] > 0                                # D is confident on 100 faces: p grows
    for name in ("reals.png", "fakes000015.png", "fakes000030.png"):
        assert (wd / name).stat().st_size > 100
    if _has_tensorboard():
        assert any((wd / "tb").iterdir())
    # The EMA export is a model file that nets/ reads and renders; it equals the checkpoint's EMA.
    mcfg, g = load_generator(str(wd / "ema"))
    assert mcfg == make_config().hparams.model
    state, data, _ = restore(wd)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(state.g_ema)):
        np.testing.assert_array_equal(a, b)
    imgs = render(mcfg, g, np.random.RandomState(0).randn(2, mcfg.z_dim).astype(np.float32), batch=2)
    assert imgs.shape == (2, 16, 16, 3) and imgs.std() > 0
    # 30 steps x 32 images of 100 faces; the position is saved as the pipeline gives it, one stream per split.
    assert data == {"train": {"epoch": 9, "index": 60, "seed": 0, "num_examples": 100}}


def _has_tensorboard() -> bool:
    import importlib.util
    return importlib.util.find_spec("tensorboard") is not None


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(full_run, faces, tmp_path):
    _, full_wd = full_run
    first = run(make_config("steps=10"), tmp_path, data=faces, **QUIET)
    assert (first.status, first.last_checkpoint) == ("done", 10)
    resumed = run(make_config("steps=30"), tmp_path, data=faces, **QUIET)
    assert (resumed.status, resumed.step) == ("done", 30)
    a, da, _ = restore(full_wd)
    b, db, _ = restore(tmp_path)
    assert da == db
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(state_to_tree(a))[0],
                            jax.tree.leaves(state_to_tree(b))):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
    assert [m["step"] for m in read_metrics(tmp_path)] == [10, 20, 30]


def test_non_finite_values_stop_the_run_and_keep_the_last_good_checkpoint(faces, tmp_path):
    def make_iter(*args, **kw):
        it = pipeline.make_batches(*args, **kw)
        count = [0]

        class Poisoned:
            def __next__(self):
                count[0] += 1
                b = next(it)
                if count[0] >= 13:                                    # the batches of steps 13, 14, ...
                    b["image"] = np.full_like(b["image"], np.nan)
                return b
            get_state, set_state, close = it.get_state, it.set_state, it.close
        return Poisoned()

    res = run(make_config("steps=30"), tmp_path, data=faces, make_iter=make_iter, **QUIET)
    assert (res.status, res.step, res.last_checkpoint) == ("non_finite", 10, 10)
    events = [m for m in read_metrics(tmp_path) if "event" in m]
    assert events == [{"step": 13, "event": "non_finite", "last_checkpoint": 10,
                       "message": events[0]["message"]}]
    assert not (tmp_path / "fakes000015.png").exists()               # nothing written after the bad step
    state, _, _ = restore(tmp_path)
    assert int(state.step) == 10 and all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))


def test_sigkill_during_saves_never_breaks_the_latest_checkpoint(tmp_path):
    child = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_ckpt_writer.py"), str(tmp_path)],
                             env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        ckdir = tmp_path / "ckpt"
        while time.time() < deadline:   # wait until saves run back to back, then kill at once
            if ckdir.exists() and len([p for p in ckdir.iterdir() if p.name.isdigit()]) >= 3:
                break
            assert child.poll() is None, child.communicate()[0]
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    ck = Checkpoints(ckdir)
    try:
        step = ck.latest_step()
        state, _, _ = ck.restore(abstract_state(make_config()), replicated(make_mesh()), step)
        assert step >= 3 and int(state.step) == step
        assert float(to_host(state.pl_mean)) == step                 # the writer tags each save
    finally:
        ck.close()
    assert not [p for p in ckdir.iterdir() if "tmp" in p.name]       # the next manager cleaned up


def test_fine_tune_from_a_model_file(full_run, faces, tmp_path):
    _, wd = full_run
    cfg = make_config("model.channel_max=64")
    pre = read_pretrained(wd / "ema")
    hp, _, note = cfg.recipe.init(cfg.hparams, jax.random.key(0), pre)
    assert hp.model == make_config().hparams.model and "D freshly initialised" in note   # the file's model wins
    g = pre.variables["G"]
    res = run(make_config("steps=2", f"init_from={wd / 'ema'}"), tmp_path, data=faces, **QUIET)
    assert res.status == "done"
    after = to_host(res.state.g["params"])
    # Two Adam steps move each weight by at most ~2 lr; a fresh init would be O(1) away.
    step_size = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(g["params"])))
    assert 0 < step_size < 0.02
    bad = jax.tree.map(lambda x: x, g)
    bad["params"]["synthesis"]["b4"]["conv1"]["weight"] = np.zeros((1, 1, 1, 1), np.float32)
    del bad["params"]["synthesis"]["b16"]["torgb"]
    save_model(tmp_path / "bad", {"G": bad}, hp.model)
    with pytest.raises(ValueError, match=r"G does not fit the configured model: missing \['params'\]\['synthesis'\]"
                                         r"\['b16'\]\['torgb'\].*\['b4'\]\['conv1'\]\['weight'\]: shape"):
        cfg.recipe.init(cfg.hparams, jax.random.key(0), read_pretrained(tmp_path / "bad"))
    with pytest.raises(FileNotFoundError, match="not a gafu model file"):
        read_pretrained(tmp_path / "nothing")


def test_gafu_train_cli_runs_and_resumes_on_a_prepared_dataset(faces, tmp_path, capsys):
    from PIL import Image
    src = tmp_path / "faces"
    src.mkdir()
    for i, img in enumerate(faces.images):
        Image.fromarray(img).save(src / f"{i:03d}.png")
    assert cli.main(["prepare-data", "folder", str(src), "--out", str(tmp_path / "data"), "--resolution", "16"]) == 0
    wd = tmp_path / "run"
    args = ["train", "--config", "tiny", "--workdir", str(wd), "--data", str(tmp_path / "data"), "--no-progress",
            "--steps", "2"] + [f"--set={o}" for o in ("model.resolution=16", "batch=32", "sample_every=0")]
    assert cli.main(args) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    assert cli.main(["train", "--workdir", str(wd), "--steps", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "done: 3 steps" in out
    assert cli.main(["train", "--workdir", str(wd), "--steps", "4", "--no-progress",
                     "--set", "loss.r1_gamma=5"]) == 2
    assert "different training recipe (loss.r1_gamma: 0.0256 -> 5.0)" in capsys.readouterr().err


@pytest.mark.slow
def test_fine_tune_with_freeze_d_and_frozen_generator_blocks(full_run, faces, tmp_path):
    _, wd = full_run
    src, _, _ = restore(wd)
    cfg = make_config("steps=3", f"init_from={wd}", "finetune.freeze_d=4", "finetune.freeze_g_res=8",
                      "finetune.freeze_mapping=true")
    res = run(cfg, tmp_path, data=faces, **QUIET)
    new = to_host(res.state)
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    gs, gn = src.g["params"], new.g["params"]
    assert same(new.d["params"]["b16"], src.d["params"]["b16"])                  # layers 0-3: b16.*
    assert not same(new.d["params"]["b8"], src.d["params"]["b8"]) and not same(new.d["params"]["b4"],
                                                                              src.d["params"]["b4"])
    assert same(gn["mapping"], gs["mapping"]) and same(gn["synthesis"]["b4"], gs["synthesis"]["b4"])
    assert same(gn["synthesis"]["b8"], gs["synthesis"]["b8"])
    assert not same(gn["synthesis"]["b16"], gs["synthesis"]["b16"])
