"""Feature-network weights that the user downloads once: found, sha256-checked, read, converted to `.npz`.

No download ever happens. A `WeightSpec` names one published file (its name, sha256, where to get it, the flag and
environment variable that point at it); the lookup order is the path given, the environment variable, then
`~/.cache/gafu/weights/` (under $XDG_CACHE_HOME if set) holding the original or the `.npz` converted from it.
A converted `.npz` holds the torch state dict's arrays under their own keys plus `source_sha256` (the original's
hash) and `weights_sha256` (a hash of the arrays, checked on load), so machines without torch can use it.
Used by nets/inception_weights.py (FID/KID) and nets/nv_vgg16_weights.py (precision/recall).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from nets import convert_io

META_KEYS = ("source_sha256", "weights_sha256")


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    what: str                  # 'the FID Inception weights'
    file_name: str             # the published file's name
    sha256: str                # its full sha256
    url: str                   # where the user gets it
    env: str                   # environment variable holding a path
    flag: str                  # the CLI flag holding a path ('--inception')
    convert_flag: str          # the CLI flag converting it ('--convert-inception')
    error: type = ValueError   # raised for every problem with the file

    def candidates(self) -> list[Path]:
        d = weights_dir()
        return [d / self.file_name, d / (Path(self.file_name).stem + ".npz")]

    def missing_message(self, tried: list[Path]) -> str:
        where = ", ".join(str(p) for p in tried)
        default, npz = self.candidates()
        return (f"{self.what} are needed and were not found (looked at {where}). Download them yourself from "
                f"{self.url} and either put the file at {default}, set {self.env}=FILE, or pass {self.flag} FILE. "
                f"Without torch at eval time, convert it once with `gafu eval {self.convert_flag} "
                f"{self.file_name} --out {npz}` on a machine that has it (pip install 'gafu[torch]')")


def weights_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser(os.path.join("~", ".cache"))
    return Path(base) / "gafu" / "weights"


def find(spec: WeightSpec, path: str | os.PathLike | None = None) -> Path:
    """The file to use: `path`, else $env, else the first default location that exists."""
    if path is None:
        path = os.environ.get(spec.env) or None
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise spec.error(spec.missing_message([p]))
        return p
    tried = spec.candidates()
    for p in tried:
        if p.is_file():
            return p
    raise spec.error(spec.missing_message(tried))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def arrays_sha256(flat: Mapping[str, np.ndarray]) -> str:
    """A hash of named arrays (keys sorted; name, dtype, shape and bytes of each): the weights' identity, whatever
    file they came in. Also the cache key of dataset statistics."""
    h = hashlib.sha256()
    for k in sorted(flat):
        a = np.ascontiguousarray(flat[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def read(spec: WeightSpec, path: Path, torch_reader: Callable[[Path], dict] | None = None
         ) -> tuple[dict[str, np.ndarray], str]:
    """(torch-keyed arrays, sha256 of the original file) of the original (read by `torch_reader`, default
    convert_io's torch.load) or a converted .npz (its recorded source hash, after checking its arrays)."""
    try:
        if path.suffix.lower() != ".npz":
            flat = (torch_reader or convert_io.read_checkpoint)(path)
            return flat, file_sha256(path)
        flat = convert_io.read_checkpoint(path)
    except convert_io.ConvertError as e:
        raise spec.error(str(e)) from None
    if not all(k in flat for k in META_KEYS):
        raise spec.error(f"{path}: no source_sha256/weights_sha256; write the .npz with "
                         f"`gafu eval {spec.convert_flag} FILE --out {path.name}`")
    meta = {k: str(flat.pop(k)) for k in META_KEYS}
    if arrays_sha256(flat) != meta["weights_sha256"]:
        raise spec.error(f"{path}: its arrays do not match the weights_sha256 written with them (the file is "
                         f"damaged); convert the original again")
    return flat, meta["source_sha256"]


def save_npz(flat: Mapping[str, np.ndarray], out: str | os.PathLike, source_sha256: str,
             overwrite: bool = False) -> Path:
    """Torch-keyed arrays -> the converted .npz (atomically), recording where they came from (`source_sha256`:
    the original's hash, or any label for weights that never were one, e.g. random test weights)."""
    flat = {k: np.asarray(v) for k, v in flat.items()}
    flat.update(source_sha256=np.array(source_sha256), weights_sha256=np.array(arrays_sha256(flat)))
    return convert_io.write_npz(out, flat, overwrite=overwrite)
