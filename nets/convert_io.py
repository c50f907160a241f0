"""Reading PyTorch-side checkpoints into flat {key: numpy array} dicts, and writing them back as .npz.

Flat keys join nested dict keys with '/': a rosinality `.pt` holding {'g_ema': {'convs.0.conv.weight': ...},
'latent_avg': ...} reads as {'g_ema/convs.0.conv.weight': ..., 'latent_avg': ...}; an `.npz` written with those
keys reads identically, so no PyTorch is needed for it. Only numpy is imported at module level: torch is an
optional extra, imported inside the .pt/.pth reader.
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nets.images import atomic_write

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")


class ConvertError(ValueError):
    """A checkpoint cannot be read or converted; the message names the file, key and shapes at fault."""


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested mappings -> {'a/b/c': leaf}. Keys are turned into strings (optimizer states use int keys)."""
    out: dict[str, object] = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ConvertError(f"cannot read {path} as .npz: {e}") from None


def read_torch(path: Path) -> dict[str, np.ndarray]:
    """A torch.save'd state dict (or dict of state dicts), loaded with weights_only=True (no code runs)."""
    try:
        import torch
    except ImportError:
        raise ConvertError(f"reading {path} needs PyTorch: `pip install 'gafu[torch]'`, or save the checkpoint "
                           f"as .npz with its nested keys joined by '/' (e.g. 'g_ema/convs.0.conv.weight') and "
                           f"convert that") from None
    import argparse
    import contextlib

    # rosinality checkpoints carry their training flags as an argparse.Namespace; allow just that class
    # (torch >= 2.5; older versions read the state dicts only when no such object is in the file).
    safe = getattr(torch.serialization, "safe_globals", None)
    try:
        with safe([argparse.Namespace]) if safe else contextlib.nullcontext():
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise ConvertError(f"cannot read {path} with torch.load(weights_only=True): {type(e).__name__}: {e}. "
                           f"NVIDIA network pickles with embedded code are not read: load them with NVIDIA's "
                           f"code and torch.save {{'G_ema': G_ema.state_dict(), 'D': D.state_dict()}}") from None
    if hasattr(obj, "state_dict") and not isinstance(obj, Mapping):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ConvertError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    out = {}
    for k, v in flatten(obj).items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            out[k] = (v.float() if v.is_floating_point() else v).numpy()
    return out


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Flat {key: array} of a .npz, or (with torch) a .pt / .pth / .ckpt state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path)
    if suffix in TORCH_SUFFIXES:
        return read_torch(path)
    if suffix == ".pkl":
        raise ConvertError(f"{path}: NVIDIA network pickles embed their source code and need NVIDIA's "
                           f"dnnlib/torch_utils to unpickle. Load it with that code and save the state dicts: "
                           f"torch.save({{'G_ema': G_ema.state_dict(), 'D': D.state_dict()}}, 'model.pt') "
                           f"(or np.savez with keys like 'G_ema/mapping.fc0.weight'), then convert that file")
    raise ConvertError(f"{path}: unknown checkpoint type {suffix!r}; expected .npz, .pt, .pth or .ckpt")


def write_npz(path: str | os.PathLike, flat: Mapping[str, np.ndarray], overwrite: bool = False) -> Path:
    """Write {key: array} as an uncompressed .npz atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ConvertError(f"export target {path} must end in .npz")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass --overwrite / overwrite=True to replace it)")
    atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in flat.items()}))
    return path
