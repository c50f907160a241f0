"""The FID Inception's weights: found, checked by sha256, read from pytorch-fid's `.pth` or a converted `.npz`.

No download ever happens. The file is the one pytorch-fid fetches (`FID_WEIGHTS_URL` in
src/pytorch_fid/inception.py): `pt_inception-2015-12-05-6726825d.pth`, whose name carries the first 8 hex digits
of its sha256 (torch.hub's convention). Where it is looked for, first hit wins: the path given (`--inception`),
$GAFU_INCEPTION, then `~/.cache/gafu/weights/` (under $XDG_CACHE_HOME if set) holding the `.pth` or the `.npz`
that `convert_inception` writes from it (for machines without torch).

A converted `.npz` holds the state dict's arrays under their torch keys, plus `source_sha256` (the `.pth`'s hash)
and `weights_sha256` (a hash of the arrays, checked on load). Other weights (random ones for tests, another port)
are refused unless the caller allows them: FIDs computed with them are not comparable to published ones.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nets import inception, weight_files
from nets.weight_files import arrays_sha256

FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"
SHA256_PREFIX = "6726825d"
# The full sha256 of that file, as recorded for torch-fidelity's copy of the same weights
# (`weights-inception-2015-12-05-6726825d.pth`, same hub prefix); the prefix check alone is torch.hub's.
SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FILE_NAME
ENV = "GAFU_INCEPTION"
META_KEYS = weight_files.META_KEYS


class InceptionWeightsError(ValueError):
    """The Inception weights are missing, unreadable, of the wrong shapes, or not the expected file."""


SPEC = weight_files.WeightSpec("the FID Inception weights (pytorch-fid's)", FILE_NAME, SHA256, URL, ENV,
                               "--inception", "--convert-inception", InceptionWeightsError)


def default_candidates() -> list[Path]:
    return SPEC.candidates()


def missing_message(tried: list[Path]) -> str:
    return SPEC.missing_message(tried)


def find_weights(path: str | os.PathLike | None = None) -> Path:
    """The weights file to use: `path`, else $GAFU_INCEPTION, else the first default location that exists."""
    return weight_files.find(SPEC, path)


def _torch_key(path: tuple[str, ...]) -> str:
    """('Mixed_5b', 'branch1x1', 'conv', 'kernel') -> 'Mixed_5b.branch1x1.conv.weight' (collection dropped)."""
    *mods, leaf = path
    return ".".join(mods + [{"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                             "var": "running_var"}[leaf]])


def _leaf_paths(tree: Mapping, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in tree.items():
        out += _leaf_paths(v, prefix + (k,)) if isinstance(v, Mapping) else [prefix + (k,)]
    return out


def from_state_dict(sd: Mapping[str, np.ndarray], where: str) -> dict:
    """pytorch-fid / torchvision state dict -> our variables (conv OIHW -> HWIO). fc.* and num_batches_tracked
    are not used (features stop at the pool); any other missing key or wrong shape is an error naming it."""
    shapes = inception.variable_shapes()
    out: dict = {}
    for coll in ("params", "batch_stats"):
        for path in _leaf_paths(shapes[coll]):
            key = _torch_key(path)
            want = _get(shapes[coll], path).shape
            if key not in sd:
                raise InceptionWeightsError(f"{where}: no {key!r}; not an Inception-v3 state dict "
                                            f"(it has {len(sd)} keys, e.g. {', '.join(list(sd)[:3])})")
            a = np.asarray(sd[key], np.float32)
            if path[-1] == "kernel":
                a = a.transpose(2, 3, 1, 0) if a.ndim == 4 else a
            if a.shape != tuple(want):
                raise InceptionWeightsError(f"{where}: {key!r} has shape {a.shape} (as HWIO); the FID Inception "
                                            f"needs {tuple(want)}")
            _set(out, (coll,) + path, a)
    return out


def to_state_dict(variables: Mapping) -> dict[str, np.ndarray]:
    """Our variables -> torch-keyed arrays (HWIO -> OIHW): what convert_inception writes and tests feed torch."""
    sd = {}
    for coll in ("params", "batch_stats"):
        for path in _leaf_paths(variables[coll]):
            a = np.asarray(_get(variables[coll], path), np.float32)
            sd[_torch_key(path)] = a.transpose(3, 2, 0, 1) if path[-1] == "kernel" else a
    return sd


def _get(tree: Mapping, path: tuple[str, ...]):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def _read(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """(torch-keyed arrays, sha256 of the original .pth) of a .pth or a converted .npz."""
    return weight_files.read(SPEC, path)


def load_inception(path: str | os.PathLike | None = None, allow_other: bool = False) -> tuple[dict, str]:
    """(variables, network id) of the FID Inception. The id is 'pytorch-fid' plus the weights' hash for the
    official file, 'other' plus it for anything else (allowed only with `allow_other`)."""
    p = find_weights(path)
    sd, source = _read(p)
    official = source == SHA256
    if not official and not allow_other:
        raise InceptionWeightsError(
            f"{p}: sha256 {source[:16]}... is not pytorch-fid's {FILE_NAME} ({SHA256[:16]}...; a download "
            f"from {URL} has it). Pass --any-inception to use other weights anyway (FIDs are then not comparable "
            f"with published ones)")
    variables = from_state_dict(sd, str(p))
    net_hash = arrays_sha256(to_state_dict(variables))
    return variables, f"{'pytorch-fid' if official else 'other'}-{net_hash[:16]}"


def convert_inception(src: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
                      allow_other: bool = False) -> Path:
    """pytorch-fid's .pth (needs torch) -> an .npz that loads without torch, its source hash recorded."""
    src = Path(src)
    if not src.is_file():
        raise InceptionWeightsError(missing_message([src]))
    sd, source = _read(src)
    if source != SHA256 and not allow_other:
        raise InceptionWeightsError(f"{src}: sha256 {source[:16]}... is not pytorch-fid's {FILE_NAME} "
                                    f"({SHA256[:16]}...); pass --any-inception to convert it anyway")
    return save_npz(from_state_dict(sd, str(src)), out, source, overwrite=overwrite)


def save_npz(variables: Mapping, out: str | os.PathLike, source_sha256: str, overwrite: bool = False) -> Path:
    """Variables -> the converted .npz (atomically), recording where they came from (`source_sha256`: the .pth's
    hash, or any label for weights that never were one, e.g. random test weights)."""
    return weight_files.save_npz(to_state_dict(variables), out, source_sha256, overwrite=overwrite)
