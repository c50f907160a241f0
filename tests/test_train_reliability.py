"""Reliability of training workdirs (issue 14, the train/ rows): one trainer per workdir (two real processes),
fallback from an unreadable newest checkpoint, a torn metrics line, wrong data caught before anything compiles."""
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _train_common import faces, make_config
from datasets import lock
from datasets.pipeline import ArraySource
from train.logs import read_metrics
from train.loop import run

QUIET = dict(progress=False, log=lambda s: None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 20-step run with checkpoints at 10 and 20 (copied by each test that damages it)."""
    wd = tmp_path_factory.mktemp("trained") / "run"
    res = run(make_config("steps=20"), wd, data=faces(16), **QUIET)
    assert (res.status, res.last_checkpoint) == ("done", 20)
    return wd


def _largest_data_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    return max(files, key=lambda p: p.stat().st_size)


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(trained, tmp_path):
    wd = tmp_path / "run"
    shutil.copytree(trained, wd)
    victim = _largest_data_file(wd / "ckpt" / "20")
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 3)
    with open(wd / "metrics.jsonl", "a") as f:                      # a kill in the middle of a metrics line
        f.write('{"step": 21, "loss/G": 0.')
    notes = []
    res = run(make_config("steps=22"), wd, data=faces(16), progress=False, log=notes.append)
    assert (res.status, res.step, res.last_checkpoint) == ("done", 22, 22)
    bad = [n for n in notes if n.startswith("checkpoint of step")]
    assert len(bad) == 1 and "checkpoint of step 20 is unreadable" in bad[0] and "\n" not in bad[0]
    assert any("resuming" in n and "from step 10" in n for n in notes)
    aside = list((wd / "ckpt-unreadable").iterdir())                 # set aside, never deleted
    assert len(aside) == 1 and aside[0].name.startswith("20-") and (aside[0] / "state").is_dir()
    assert [m["step"] for m in read_metrics(wd) if "event" not in m] == [10, 20, 22]


def test_no_readable_checkpoint_is_one_clear_error(trained, tmp_path):
    wd = tmp_path / "run"
    shutil.copytree(trained, wd)
    for step in (10, 20):
        victim = _largest_data_file(wd / "ckpt" / str(step))
        victim.write_bytes(b"\0" * 17)
    with pytest.raises(ValueError, match=r"none of its 2 checkpoints is readable \(moved to .*ckpt-unreadable\)"):
        run(make_config("steps=22"), wd, data=faces(16), **QUIET)
    assert sorted(p.name.split("-")[0] for p in (wd / "ckpt-unreadable").iterdir()) == ["10", "20"]


def test_wrong_resolution_data_is_refused_before_compiling_and_writes_nothing(tmp_path):
    wd = tmp_path / "run"
    t0 = time.time()
    with pytest.raises(ValueError, match=r"the data yields 'image' of shape \(16, 16, 3\); this run needs "
                                         r"\(8, 8, 3\)"):
        run(make_config(resolution=8), wd, data=faces(16), **QUIET)
    assert not wd.exists() and time.time() - t0 < 30                 # no workdir skeleton, no compile


def test_a_second_trainer_on_one_workdir_is_refused_and_a_stale_lock_taken_over(tmp_path):
    wd = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, 'tests'); from datasets import lock\n"
        f"with lock.hold(__import__('pathlib').Path({str(wd)!r}), 'gafu train'):\n"
        "    print('held', flush=True); time.sleep(600)")], cwd=Path(__file__).parents[1], stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        with pytest.raises(lock.LockedError) as e:
            run(make_config("steps=1"), wd, data=ArraySource(np.zeros((8, 16, 16, 3), np.uint8)), **QUIET)
        msg = str(e.value)
        assert str(wd) in msg and f"pid {holder.pid}" in msg and "\n" not in msg and time.time() - t0 < 30
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    notes = []                                                        # the holder died: its lock is stale
    with lock.hold(wd, "gafu train", note=notes.append):
        pass
    assert len(notes) == 1 and str(holder.pid) in notes[0]
