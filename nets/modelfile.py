"""Model files: variables (params + buffers) of one or more networks plus the model config, written with orbax.

Layout of a model file (a directory):
  <path>/gafu.json      {"format": "gafu-model", "version": 1, "arch": ..., "config": {...}, "meta": {...}}
  <path>/variables/     orbax StandardCheckpointer tree, e.g. {"G": {"params", "buffers"}, "D": {"params"}}

Writes are atomic: everything goes to a hidden sibling directory that is renamed into place only when complete,
so an interrupted save never leaves a file that looks whole. Reading needs no model definition: the tree
structure, shapes and dtypes come from orbax's own metadata, and leaves come back as numpy arrays.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np

PyTree = Any
FORMAT, VERSION = "gafu-model", 1


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


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_model(path: str | os.PathLike, variables: dict, config: dict | Any, arch: str = "stylegan2",
               meta: dict | None = None, overwrite: bool = False) -> Path:
    """Write a model file atomically. `config` may be a dataclass (it is stored as a dict)."""
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise ModelFileError(f"{path} already exists (choose another path, or ask to overwrite it)")
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    header = {"format": FORMAT, "version": VERSION, "arch": arch, "config": config, "meta": meta or {}}
    json.dumps(header)  # fail before writing anything if the header is not JSON-serialisable
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tree = jax.tree.map(np.asarray, variables)
        ckptr = _checkpointer()
        ckptr.save(tmp / "variables", tree)
        ckptr.wait_until_finished()
        ckptr.close()
        with open(tmp / "gafu.json", "w") as f:
            json.dump(header, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_header(path: str | os.PathLike) -> dict:
    path = Path(path)
    hdr = path / "gafu.json"
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not hdr.is_file() or not (path / "variables").is_dir():
        raise ModelFileError(f"{path} is not a gafu model file (expected gafu.json and variables/ inside)")
    try:
        header = json.loads(hdr.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{hdr} is unreadable: {e}") from None
    if header.get("format") != FORMAT:
        raise ModelFileError(f"{hdr}: format is {header.get('format')!r}, expected {FORMAT!r}")
    if header.get("version", 0) > VERSION:
        raise ModelFileError(f"{hdr}: version {header['version']} is newer than this gafu reads ({VERSION})")
    return header


def load_model(path: str | os.PathLike) -> ModelFile:
    """Read a model file into numpy arrays (no model definition or device layout needed)."""
    path = Path(path).absolute()
    header = read_header(path)
    ckptr = _checkpointer()
    try:
        meta = ckptr.metadata(path / "variables").item_metadata
        dev = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=dev), meta)
        tree = ckptr.restore(path / "variables", target)
    except Exception as e:  # orbax raises many types; the caller needs the path and the cause
        raise ModelFileError(f"cannot read the variables of model file {path}: {type(e).__name__}: {e}") from e
    finally:
        ckptr.close()
    tree = jax.tree.map(np.asarray, tree)
    return ModelFile(variables=tree, config=header["config"], arch=header["arch"], meta=header["meta"],
                     path=path)
