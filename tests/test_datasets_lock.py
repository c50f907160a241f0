"""One writer per output folder (datasets/lock.py) and the other prepare-data items of issue 14, row 5.

The lock is tested with two real processes: a holder in a subprocess, the second writer here.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import build
from datasets.builders import prepare_dataset
from datasets.lock import LockedError, hold, lock_path
from datasets.pipeline import open_source
from nets import cli

ROOT = Path(__file__).resolve().parents[1]


def holder(path: Path, what: str = "test holder") -> subprocess.Popen:
    """A process that holds `path`'s lock until its stdin closes (SIGKILL it to leave a stale lock)."""
    script = textwrap.dedent(f"""
        import sys
        from datasets.lock import hold
        with hold({str(path)!r}, {what!r}):
            print("HELD", flush=True)
            sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True)
    assert proc.stdout.readline().strip() == "HELD"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=60)
    proc.stdout.close()


def test_second_process_is_refused_naming_the_folder_and_the_holder(tmp_path):
    out = tmp_path / "data"
    proc = holder(out)
    try:
        with pytest.raises(LockedError) as e:
            with hold(out, "second"):
                pass
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{out} is in use by test holder on host {socket.gethostname()}, "
                                                  f"pid {proc.pid}, started 20")
        assert f"(lock file {tmp_path / '.data.lock'})" in msg
        assert json.loads(lock_path(out).read_text())["pid"] == proc.pid          # the holder's lock is untouched
    finally:
        release(proc)
    assert not lock_path(out).exists()                                          # removed on exit
    notes = []
    with hold(out, "second", note=notes.append) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert notes == [] and not lock.exists()


def test_stale_lock_of_a_killed_holder_is_taken_over_with_a_note(tmp_path):
    out = tmp_path / "data"
    proc = holder(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stdin.close()
    assert json.loads(lock_path(out).read_text())["pid"] == proc.pid             # left behind by the killed one
    notes = []
    with hold(out, "next", note=notes.append) as lock:
        assert json.loads(lock.read_text())["what"] == "next"
    assert len(notes) == 1 and f"taking over the stale lock {lock}" in notes[0] and f"pid {proc.pid}" in notes[0]
    assert not lock.exists()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    out = tmp_path / "data"
    lock_path(out).write_text(json.dumps({"host": "elsewhere", "pid": 1, "start": "2024-01-01T00:00:00+00:00",
                                          "what": "gafu train"}))
    with pytest.raises(LockedError, match=rf"in use by gafu train on host elsewhere, pid 1, started 2024-01-01.*"
                                          rf"if that job is gone, remove {lock_path(out)}"):
        with hold(out, "here"):
            pass
    assert json.loads(lock_path(out).read_text())["host"] == "elsewhere"


def test_lock_is_released_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with hold(tmp_path / "x", "t"):
            raise RuntimeError("boom")
    assert not lock_path(tmp_path / "x").exists()


# -- prepare-data --------------------------------------------------------------------------------------------------
@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def test_second_prepare_data_into_one_out_refuses_at_once_and_leaves_the_first_build(src, tmp_path, capsys):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import sys, datasets.build as build
        real = build.prepare_job
        def slow(job, *a):
            if job.key == "1.png":
                print("WAITING", flush=True); sys.stdin.readline()
            return real(job, *a)
        build.prepare_job = slow
        from datasets.builders import prepare_dataset
        prepare_dataset("folder", {str(out)!r}, src={str(src)!r}, resolution=16, progress=False)
        print("BUILT", flush=True)
    """)
    first = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)), text=True)
    try:
        assert first.stdout.readline().strip() == "WAITING"                       # mid-build
        temps = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.incomplete-")]
        rc = cli.main(["prepare-data", "folder", str(src), "--out", str(out), "--resolution", "16", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1
        assert err.startswith(f"gafu prepare-data: error: {out} is in use by prepare-data on host "
                              f"{socket.gethostname()}, pid {first.pid}, started ")
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.incomplete-")] == temps and temps
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() == "BUILT"                          # the first build finishes
    finally:
        release(first)
    assert len(open_source(out)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


@pytest.mark.parametrize("value", ["0", "-16", "12", "2"])
def test_prepare_data_refuses_a_bad_resolution_in_one_line(src, tmp_path, capsys, value):
    rc = cli.main(["prepare-data", "folder", str(src), "--out", str(tmp_path / "out"), "--resolution", value])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"gafu prepare-data: error: resolution must be a power of two >= 4; got {value}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_prepare_data_leaves_nothing_in_the_system_temp_dir_and_fsyncs_its_commit(src, tmp_path, monkeypatch):
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    synced = []
    real = build._fsync
    monkeypatch.setattr(build, "_fsync", lambda p: (synced.append((Path(p), (tmp_path / "out").is_dir())), real(p)))
    prepare_dataset("folder", tmp_path / "out", src=src, resolution=16, progress=False)
    assert list(systmp.iterdir()) == []                                 # tfds made a `tmp*tfds` folder here
    assert (tmp_path, True) in synced                                    # the parent, after the rename
    names = {p.name for p, _ in synced}                                 # synced in the temp folder, before
    assert all(p.name in names for p in (tmp_path / "out").rglob("*") if p.is_file())
