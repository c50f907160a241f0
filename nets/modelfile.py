"""Model files: variables (params + buffers) of one or more networks plus the model config, written with orbax.

Layout of a model file (a directory):
  <path>/gafu.json      {"format": "gafu-model", "version": 1, "arch": ..., "config": {...}, "meta": {...},
                         "checksums": {"G/params/...": {"sha256": ..., "shape": [...], "dtype": "float32"}, ...}}
  <path>/variables/     orbax StandardCheckpointer tree, e.g. {"G": {"params", "buffers"}, "D": {"params"}}

Integrity: every array's sha256 (over its C-order bytes, with its shape and dtype) is written in gafu.json and
checked on load, so a flipped byte in an orbax data file is an error naming the array, not silently wrong weights.
Files written before checksums existed have none and still load (only the finiteness check applies to them).
Non-finite weights are refused both ways: a model that diverged is never written, nor read by any command.

Writes are atomic: everything goes to a hidden sibling directory `.NAME.tmp-*`, fsynced, and renamed into place
only when complete, so an interrupted save never leaves a file that looks whole. Temp folders of killed saves
(`.NAME.tmp-*`, and `.NAME.old-*` of a killed replace) are swept by the next successful save of that model file,
once nothing has touched them for STALE_AFTER_S (an age rule: it holds for writers on other hosts too). Reading
needs no model definition: the tree structure, shapes and dtypes come from orbax's own metadata, and leaves come
back as numpy arrays.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nets.images import fsync_dir
from nets.paths import path_str

PyTree = Any
FORMAT, VERSION = "gafu-model", 1
STALE_AFTER_S = 600.0      # a temp folder untouched this long belongs to no live writer (saves take seconds)


class ModelFileError(ValueError):
    """A model file is missing, unreadable or not what the caller needs; the message names the path."""


@dataclasses.dataclass
class ModelFile:
    variables: dict          # e.g. {"G": {"params": ..., "buffers": ...}, "D": {"params": ...}}, numpy leaves
    config: dict             # the architecture's config as a plain dict
    arch: str                # "stylegan2", ...
    meta: dict               # free-form provenance (converted from, blended how, training step, ...)
    path: Path | None = None


def _checkpointer():
    """A checkpointer scoped to this process: model files hold host numpy arrays that one process reads or
    writes on its own, while orbax's default under jax.distributed waits for every process at barriers."""
    import orbax.checkpoint as ocp  # deferred: orbax import costs ~0.2 s
    if jax.process_count() == 1:
        return ocp.StandardCheckpointer()
    me = jax.process_index()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me}))


# ----------------------------------------------------------------------------------------------------------------
# Integrity


def flat_arrays(tree: PyTree) -> dict[str, np.ndarray]:
    """{"G/params/.../weight": array} in tree order."""
    return {path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def checksum(a: np.ndarray) -> dict:
    a = np.asarray(a, order="C")
    return {"sha256": hashlib.sha256(a.reshape(-1).view(np.uint8)).hexdigest(), "shape": list(a.shape),
            "dtype": str(a.dtype)}


def _is_float(dt: np.dtype) -> bool:
    return dt.kind in "fc" or dt.name.startswith(("bfloat", "float"))       # ml_dtypes' bfloat16 has kind 'V'


def check_finite(arrays: dict[str, np.ndarray], where: str) -> None:
    """ModelFileError naming `where` and the first array holding NaN or inf."""
    for key, a in arrays.items():
        if _is_float(a.dtype):
            finite = np.isfinite(a if a.dtype.kind in "fc" else a.astype(np.float32))
            bad = int(a.size - np.count_nonzero(finite))
            if bad:
                raise ModelFileError(f"{where}: array {key} holds {bad} non-finite value(s) (NaN or inf) of "
                                     f"{a.size}; refusing a model with non-finite weights")


def verify_checksums(arrays: dict[str, np.ndarray], sums: dict, where: str) -> None:
    """ModelFileError naming `where` and the first array that is missing, unlisted or differs from gafu.json."""
    for key, want in sums.items():
        if key not in arrays:
            raise ModelFileError(f"{where}: array {key} is listed in gafu.json but missing from variables/; the "
                                 f"model file is incomplete")
        a = arrays[key]
        got = checksum(a if str(a.dtype) == want["dtype"] else a.astype(want["dtype"]))   # int64 back as int32
        if got != want:
            what = "content" if got["shape"] == want["shape"] and got["dtype"] == want["dtype"] else \
                f"shape/dtype ({got['shape']} {got['dtype']}, expected {want['shape']} {want['dtype']})"
            raise ModelFileError(f"{where}: array {key} does not match its checksum in gafu.json ({what} "
                                 f"differs); the model file is corrupt")
    extra = [k for k in arrays if k not in sums]
    if extra:
        raise ModelFileError(f"{where}: array {extra[0]} is in variables/ but not in gafu.json's checksums; the "
                             f"model file is corrupt")


# ----------------------------------------------------------------------------------------------------------------
# Writing


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (orbax / TensorStore do not sync everything they write)."""
    for d, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(d, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(d)


def _newest_mtime(root: Path) -> float:
    newest = root.lstat().st_mtime
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(d, name)).st_mtime)
    return newest


def stale_temps(path: Path, now: float | None = None) -> list[Path]:
    """Temp folders of earlier saves of `path` (`.NAME.tmp-*`, `.NAME.old-*`) untouched for STALE_AFTER_S."""
    now = time.time() if now is None else now
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(tmp|old)-[0-9a-f]{{8}}")
    out = []
    for p in path.parent.iterdir():
        if pattern.fullmatch(p.name):
            with contextlib.suppress(OSError):      # gone meanwhile: its writer finished
                if now - _newest_mtime(p) > STALE_AFTER_S:
                    out.append(p)
    return out


def save_model(path: str | os.PathLike, variables: dict, config: dict | Any, arch: str = "stylegan2",
               meta: dict | None = None, overwrite: bool = False) -> Path:
    """Write a model file atomically, with a checksum per array. `config` may be a dataclass (stored as a dict).

    Refuses non-finite weights, and never replaces (even with `overwrite`) a path that is not a model file."""
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise ModelFileError(f"{path} already exists (choose another path, or ask to overwrite it)")
    if path.exists() and not (path / "gafu.json").is_file():
        raise ModelFileError(f"{path} exists and is not a gafu model file; refusing to replace it")
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    # as a reader gets them back (orbax restores through jax: int64 -> int32 unless x64 is on)
    tree = jax.tree.map(lambda x: np.asarray(x, jax.dtypes.canonicalize_dtype(np.asarray(x).dtype)), variables)
    arrays = flat_arrays(tree)
    check_finite(arrays, f"model file {path}")
    header = {"format": FORMAT, "version": VERSION, "arch": arch, "config": config, "meta": meta or {},
              "checksums": {k: checksum(a) for k, a in arrays.items()}}
    json.dumps(header)  # fail before writing anything if the header is not JSON-serialisable
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        ckptr = _checkpointer()
        ckptr.save(tmp / "variables", tree)
        ckptr.wait_until_finished()
        ckptr.close()
        with open(tmp / "gafu.json", "w") as f:
            json.dump(header, f, indent=1)
        _fsync_tree(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in stale_temps(path):       # after the commit: `path` is whole, so these are garbage
        shutil.rmtree(stale, ignore_errors=True)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Reading


def read_header(path: str | os.PathLike) -> dict:
    path = Path(path)
    hdr = path / "gafu.json"
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not hdr.is_file() or not (path / "variables").is_dir():
        raise ModelFileError(f"{path} is not a gafu model file (expected gafu.json and variables/ inside)")
    try:
        header = json.loads(hdr.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{hdr} is unreadable: {e}") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{hdr} is not a JSON object")
    if header.get("format") != FORMAT:
        raise ModelFileError(f"{hdr}: format is {header.get('format')!r}, expected {FORMAT!r}")
    if header.get("version", 0) > VERSION:
        raise ModelFileError(f"{hdr}: version {header['version']} is newer than this gafu reads ({VERSION})")
    return header


def _is_orbax_coroutine(obj: Any) -> bool:
    return isinstance(obj, types.CoroutineType) and "orbax" in obj.cr_code.co_filename


def _orbax_noise(u) -> bool:
    """An unraisable left by a failed orbax read: one of its abandoned read coroutines, or TensorStore completing
    one of those reads into orbax's event loop after it closed."""
    return _is_orbax_coroutine(u.object) or (isinstance(u.exc_value, RuntimeError)
                                             and "Event loop is closed" in str(u.exc_value))


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[Callable[[], None]]:
    """The caller reports a failed read in one line, so keep orbax's own output of it off stderr: its absl
    warnings, and the exceptions of its other reads. orbax closes its event loop on the first failure and leaves
    the other reads' coroutines waiting on TensorStore; each read that completes then reports into the closed loop,
    and its coroutine dies raising (Python prints both as 'Exception ignored in ...'). Yields `settle`: after a
    failure, wait (quietly) until those coroutines are gone."""
    import gc
    import logging

    log, level, old = logging.getLogger("absl"), logging.getLogger("absl").level, sys.unraisablehook

    def hook(u):
        if not _orbax_noise(u):
            old(u)

    def settle(timeout_s: float = 10.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            gc.collect()
            if not any(_is_orbax_coroutine(o) for o in gc.get_objects()):
                return
            time.sleep(0.02)

    log.setLevel(logging.ERROR)
    sys.unraisablehook = hook
    try:
        yield settle
    finally:
        sys.unraisablehook = old
        log.setLevel(level)


def first_line(text: str) -> str:
    """The first line of an orbax / TensorStore message, without the TensorStore spec it appends."""
    first = (text.strip().splitlines() or [""])[0]
    for cut in (" See full TensorStore details", " [tensorstore_spec="):
        first = first.split(cut)[0]
    return first.rstrip(" .")


# orbax's array folder ('G.params.b/') in TensorStore's spec, as a dict repr ('path': '...') or JSON ("path":"...")
_SPEC_PATH = re.compile(r"""path\\?['"]:\s?\\?['"]([^/'"\\][^'"\\]*)/""")


def _read_error(path: Path, e: Exception) -> ModelFileError:
    """One line naming the model file and, when TensorStore's spec in the message names it, the array."""
    text = str(e)
    found = _SPEC_PATH.search(text)
    array = f" (array {found.group(1).replace('.', '/')})" if found else ""
    return ModelFileError(f"cannot read the variables of model file {path}{array}: {type(e).__name__}: "
                          f"{first_line(text)}; the file is damaged or incomplete")


def load_model(path: str | os.PathLike) -> ModelFile:
    """Read a model file into numpy arrays (no model definition or device layout needed).

    The arrays are checked against gafu.json's checksums when it has them (files from before checksums have
    none), and refused if any holds NaN or inf; the error names the file and the first bad array."""
    path = Path(path).absolute()
    header = read_header(path)
    ckptr, error = _checkpointer(), None
    with _quiet_orbax() as settle:
        try:
            meta = ckptr.metadata(path / "variables").item_metadata
            dev = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=dev), meta)
            tree = ckptr.restore(path / "variables", target)
        except Exception as e:  # orbax raises many types (TensorStore's bare Exception); the caller needs one line
            error = _read_error(path, e)
        finally:
            ckptr.close()
        if error is not None:
            settle()
    if error is not None:       # raised unchained: the traceback would keep orbax's abandoned reads alive
        raise error
    tree = jax.tree.map(np.asarray, tree)
    arrays = flat_arrays(tree)
    if "checksums" in header:
        verify_checksums(arrays, header["checksums"], f"model file {path}")
    check_finite(arrays, f"model file {path}")
    return ModelFile(variables=tree, config=header["config"], arch=header["arch"], meta=header["meta"],
                     path=path)
