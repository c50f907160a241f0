"""The CLI's persistent compilation cache: where it lives, how it is turned off, and two processes sharing it."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from nets import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ["sample", "--preset", "tiny", "--seeds", "0-3"]


def test_compile_cache_dir_follows_the_environment():
    assert cli.compile_cache_dir({"HOME": "/h"}) == os.path.join(os.path.expanduser("~"), ".cache", "gafu", "jax")
    assert cli.compile_cache_dir({"XDG_CACHE_HOME": "/xdg"}) == "/xdg/gafu/jax"
    assert cli.compile_cache_dir({"GAFU_COMPILE_CACHE": "/mine", "XDG_CACHE_HOME": "/xdg"}) == "/mine"
    assert cli.compile_cache_dir({"GAFU_COMPILE_CACHE": "1", "XDG_CACHE_HOME": "/xdg"}) == "/xdg/gafu/jax"
    for off in ("0", "off", "OFF", "false", "no"):
        assert cli.compile_cache_dir({"GAFU_COMPILE_CACHE": off}) is None


def test_a_cache_folder_set_by_the_caller_is_kept(tmp_path):
    """In-process callers (these tests, a notebook) that configured JAX's cache keep their folder."""
    before = jax.config.jax_compilation_cache_dir
    assert before                                             # conftest's test cache
    assert cli.enable_compile_cache(str(tmp_path / "other")) == before
    assert jax.config.jax_compilation_cache_dir == before and not (tmp_path / "other").exists()


def gafu(*argv: str, cache: Path | None, out: Path, jax_dir: Path | None = None) -> subprocess.Popen:
    """`gafu ARGV --out OUT` in a fresh process, with GAFU_COMPILE_CACHE=cache (0 when None) and optionally
    JAX_COMPILATION_CACHE_DIR=jax_dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["GAFU_COMPILE_CACHE"] = str(cache) if cache else "0"
    if jax_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = str(jax_dir)
    code = f"import sys; from nets.cli import main; sys.exit(main({list(argv) + ['--out', str(out)]!r}))"
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return err


def entries(cache: Path) -> set[str]:
    return {p.name for p in cache.glob("*-cache")}


def test_two_processes_share_the_cache_and_a_rerun_hits_it(tmp_path):
    cache = tmp_path / "cache"
    first = [gafu(*SAMPLE, cache=cache, out=tmp_path / f"a{i}.png") for i in range(2)]   # at the same time
    errs = [finish(p) for p in first]
    assert not any("cache" in e.lower() for e in errs), errs     # no failed read or write of an entry
    written = entries(cache)
    assert written, "the first run kept no compiled program"
    finish(gafu(*SAMPLE, cache=cache, out=tmp_path / "b.png"))
    assert entries(cache) == written                              # the rerun compiled nothing new
    imgs = [np.asarray(Image.open(tmp_path / f)) for f in ("a0.png", "a1.png", "b.png")]
    for img in imgs[1:]:
        np.testing.assert_array_equal(img, imgs[0])               # a program from the cache computes the same


@pytest.mark.slow    # ~40-85 s on 2 cores: keeps the default tier under 10 min in CI
def test_no_compile_cache_writes_nothing(tmp_path):
    cache = tmp_path / "cache"
    env_off = gafu(*SAMPLE, cache=None, out=tmp_path / "a.png", jax_dir=tmp_path / "jax")
    flag_off = gafu("--no-compile-cache", *SAMPLE, cache=cache, out=tmp_path / "b.png")
    finish(env_off)
    finish(flag_off)
    assert not cache.exists() and not entries(tmp_path / "jax") and (tmp_path / "b.png").is_file()
