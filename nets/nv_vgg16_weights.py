"""NVIDIA's metric VGG-16 weights (`vgg16.pt`): found, sha256-checked, read from the TorchScript file or a `.npz`.

No download ever happens. The file is the one NVlabs/stylegan2-ada-pytorch's precision/recall and PPL fetch
(metrics/precision_recall.py, metrics/perceptual_path_length.py): a TorchScript archive whose state dict
(`torch.jit.load(f).state_dict()`) holds `layers.conv1.weight` .. `layers.conv13.bias`, `layers.fc1..fc3.*` and
the LPIPS heads `lpips0..4` (fc3 and the heads are not used here). Its sha256 is pinned as genforce's
models/perceptual_model.py records it (`_MODEL_URL_SHA256['vgg_perceptual_lpips']`). Where it is looked for,
first hit wins: the path given (`--vgg16`), $GAFU_VGG16, then `~/.cache/gafu/weights/vgg16.pt` or `vgg16.npz`
(what `convert_vgg16` writes, for machines without torch). See nets/weight_files.py.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nets import convert_io, nv_vgg16, weight_files

FILE_NAME = "vgg16.pt"
SHA256 = "b437eb095feaeb0b83eb3fa11200ebca4548ee39a07fb944a417ddc516cc07c3"
URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt"
ENV = "GAFU_VGG16"


class VGG16WeightsError(ValueError):
    """NV's VGG-16 weights are missing, unreadable, of the wrong shapes, or not the expected file."""


SPEC = weight_files.WeightSpec("NVIDIA's metric VGG-16 weights (stylegan2-ada-pytorch's vgg16.pt)", FILE_NAME,
                               SHA256, URL, ENV, "--vgg16", "--convert-vgg16", VGG16WeightsError)


def find_weights(path: str | os.PathLike | None = None) -> Path:
    return weight_files.find(SPEC, path)


def read_torchscript(path: Path) -> dict[str, np.ndarray]:
    """The state dict of a TorchScript archive (torch.jit.load), else of a plain torch.save'd state dict."""
    try:
        import torch
    except ImportError:
        raise VGG16WeightsError(f"reading {path} needs PyTorch: `pip install 'gafu[torch]'`, or convert it once "
                                f"on a machine that has it: `gafu eval --convert-vgg16 {path} --out vgg16.npz`"
                                ) from None
    try:
        with warnings.catch_warnings():              # newer torch deprecates TorchScript; NV's file is one
            warnings.simplefilter("ignore", DeprecationWarning)
            sd = torch.jit.load(str(path), map_location="cpu").state_dict()
    except Exception:   # not TorchScript (RuntimeError, ValueError, ...): maybe a plain state dict
        return convert_io.read_torch(path)
    return {k: v.detach().cpu().float().numpy() for k, v in sd.items() if v.is_floating_point()}


def _key(path: tuple[str, ...]) -> str:
    """('conv3', 'kernel') -> 'layers.conv3.weight'."""
    return f"layers.{path[0]}.{'weight' if path[1] == 'kernel' else 'bias'}"


def from_state_dict(sd: Mapping[str, np.ndarray], where: str, net: nv_vgg16.NVVGG16 | None = None) -> dict:
    """vgg16.pt's state dict -> our variables (conv OIHW -> HWIO, linear [O,I] -> [I,O]). Keys we do not use
    (fc3, lpips*) are ignored; a missing key or a wrong shape is an error naming it."""
    shapes = nv_vgg16.variable_shapes(net)["params"]
    params: dict = {}
    for layer, leaves in shapes.items():
        for leaf, want in leaves.items():
            key = _key((layer, leaf))
            if key not in sd:
                raise VGG16WeightsError(f"{where}: no {key!r}; not NV's metric VGG-16 (it has {len(sd)} keys, "
                                        f"e.g. {', '.join(list(sd)[:3])})")
            a = np.asarray(sd[key], np.float32)
            if leaf == "kernel":
                a = a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T
            if a.shape != tuple(want.shape):
                raise VGG16WeightsError(f"{where}: {key!r} has shape {tuple(np.shape(sd[key]))}; NV's VGG-16 "
                                        f"needs {_torch_shape(leaf, want.shape)}")
            params.setdefault(layer, {})[leaf] = a
    return {"params": params}


def _torch_shape(leaf: str, shape: tuple) -> tuple:
    if leaf != "kernel":
        return tuple(shape)
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else (shape[1], shape[0])


def to_state_dict(variables: Mapping) -> dict[str, np.ndarray]:
    """Our variables -> vgg16.pt-keyed arrays (what convert_vgg16 writes and the torch parity check loads)."""
    sd = {}
    for layer, leaves in variables["params"].items():
        for leaf, a in leaves.items():
            a = np.asarray(a, np.float32)
            if leaf == "kernel":
                a = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T
            sd[_key((layer, leaf))] = np.ascontiguousarray(a)
    return sd


def load_vgg16(path: str | os.PathLike | None = None, allow_other: bool = False,
               net: nv_vgg16.NVVGG16 | None = None) -> tuple[dict, str]:
    """(variables, network id): 'nv-vgg16' plus the weights' hash for NV's file, 'other' plus it for anything else
    (allowed only with `allow_other`)."""
    p = find_weights(path)
    sd, source = weight_files.read(SPEC, p, read_torchscript)
    official = source == SHA256
    if not official and not allow_other:
        raise VGG16WeightsError(f"{p}: sha256 {source[:16]}... is not NV's {FILE_NAME} ({SHA256[:16]}...; a "
                                f"download from {URL} has it). Pass --any-vgg16 to use other weights anyway "
                                f"(precision/recall then not comparable with published values)")
    variables = from_state_dict(sd, str(p), net)
    net_hash = weight_files.arrays_sha256(to_state_dict(variables))
    return variables, f"{'nv-vgg16' if official else 'other'}-{net_hash[:16]}"


def convert_vgg16(src: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
                  allow_other: bool = False) -> Path:
    """vgg16.pt (needs torch) -> an .npz of the used layers that loads without torch, its source hash recorded."""
    src = Path(src)
    if not src.is_file():
        raise VGG16WeightsError(SPEC.missing_message([src]))
    sd, source = weight_files.read(SPEC, src, read_torchscript)
    if source != SHA256 and not allow_other:
        raise VGG16WeightsError(f"{src}: sha256 {source[:16]}... is not NV's {FILE_NAME} ({SHA256[:16]}...); "
                                f"pass --any-vgg16 to convert it anyway")
    return save_npz(from_state_dict(sd, str(src)), out, source, overwrite=overwrite)


def save_npz(variables: Mapping, out: str | os.PathLike, source_sha256: str, overwrite: bool = False) -> Path:
    return weight_files.save_npz(to_state_dict(variables), out, source_sha256, overwrite=overwrite)
