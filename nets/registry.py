"""The generator families gafu holds: architecture name -> one frozen record of its config class and functions.

A model file's gafu.json names its `arch`. Code that works on any family (`gafu blend`, `gafu sample`, the
training core's init and previews) looks that name up here and calls the record's functions, never looking behind
them; code that needs one family asks for it by name (`load_generator(path, "stylegan2")`) and gets one clear
error for a file of another family. A new family adds one `register(Arch(...))` call.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from nets import gnr, modelfile, paths, sampling, spade, stylegan2

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class Arch:
    name: str                      # the `arch` written in a model file's gafu.json, e.g. "stylegan2"
    config_cls: type               # from_dict / to_dict / BLEND_FREE_FIELDS (e.g. StyleGAN2Config)
    generator: str                 # the model-file entry that blend / sample use: "G"
    scope: tuple[str, ...] | None  # resolution-keyed subtrees of that entry (nets.paths.GENERATOR_SCOPE); None:
                                   # every leaf with a b{R} in its path (interp.blend.leaf_resolutions)
    init: Callable                 # (cfg, key) -> fresh model-file variables {"G": {...}, "D": {...}}
    sample: Callable               # (cfg, g_vars, seeds, *, psi=1.0, noise_mode="const") -> uint8 [N,R,R,C]
    presets: Callable              # (name, **overrides) -> cfg


_ARCHS: dict[str, Arch] = {}


def register(arch: Arch) -> None:
    """Add a family. Registering the same record again is a no-op; another record under a taken name an error."""
    old = _ARCHS.get(arch.name)
    if old is not None and old != arch:
        raise ValueError(f"architecture {arch.name!r} is already registered (config {old.config_cls.__name__})")
    _ARCHS[arch.name] = arch


def names() -> tuple[str, ...]:
    return tuple(sorted(_ARCHS))


def get(name: str) -> Arch:
    if name not in _ARCHS:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(names())}")
    return _ARCHS[name]


def _config(arch: Arch, config: dict, where: str) -> Any:
    try:
        return arch.config_cls.from_dict(config)
    except (TypeError, ValueError) as e:
        raise modelfile.ModelFileError(f"{where}: invalid {arch.name} config in gafu.json: {e}") from None


def load(path: PathLike, arch: str | None = None) -> tuple[Arch, Any, modelfile.ModelFile]:
    """Model file -> (its Arch, its config object, the file). With `arch`, a file of another family is an error.

    The header is checked before the variables are read."""
    header = modelfile.read_header(path)
    found = header.get("arch")
    if found not in _ARCHS:
        raise modelfile.ModelFileError(f"model file {path} has architecture {found!r}, which gafu does not know "
                                       f"(known: {', '.join(names())})")
    if arch is not None and found != arch:
        raise modelfile.ModelFileError(f"model file {path} holds a {found!r} model; this needs a {arch!r} one")
    fam = _ARCHS[found]
    cfg = _config(fam, header.get("config", {}), f"model file {path}")
    return fam, cfg, modelfile.load_model(path)


def generator_of(arch: Arch, mf: modelfile.ModelFile) -> dict:
    """The generator's variables of a loaded model file, or an error naming the file and what it holds."""
    if arch.generator not in mf.variables:
        raise modelfile.ModelFileError(f"{mf.path} holds no {arch.name} generator {arch.generator!r} "
                                       f"(entries {sorted(mf.variables)})")
    return mf.variables[arch.generator]


def load_generator(path: PathLike, arch: str | None = None) -> tuple[Arch, Any, dict]:
    """Model file -> (its Arch, config, generator variables); `arch` as in `load`."""
    fam, cfg, mf = load(path, arch)
    return fam, cfg, generator_of(fam, mf)


def check_same_arch(a_cfg: Any, b_cfg: Any, names: tuple[str, str]) -> None:
    """Two parents of a blend must be one architecture (one fine-tuned from the other): the same config class, and
    equal configs except the class's BLEND_FREE_FIELDS. The error names both parents and every differing field."""
    if type(a_cfg) is not type(b_cfg):
        raise ValueError(f"{names[0]} is a {type(a_cfg).__name__} model and {names[1]} a {type(b_cfg).__name__} "
                         f"one; only models of one architecture can be blended")
    free = getattr(type(a_cfg), "BLEND_FREE_FIELDS", frozenset())
    a, b = a_cfg.to_dict(), b_cfg.to_dict()
    diff = sorted(k for k in a.keys() | b.keys() if k not in free and a.get(k) != b.get(k))
    if diff:
        detail = ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in diff)
        raise ValueError(f"{names[0]} and {names[1]} have different model configs ({detail}); only models of one "
                         f"architecture (one fine-tuned from the other) can be blended")


register(Arch(name="stylegan2", config_cls=stylegan2.StyleGAN2Config, generator="G", scope=paths.GENERATOR_SCOPE,
              init=stylegan2.init_model, sample=sampling.sample, presets=stylegan2.preset))
register(Arch(name="spade", config_cls=spade.SPADEConfig, generator="G", scope=None, init=spade.init_model,
              sample=spade.sample, presets=spade.preset))
register(Arch(name="gnr", config_cls=gnr.GNRConfig, generator="G", scope=gnr.BLEND_SCOPE, init=gnr.init_model,
              sample=gnr.sample, presets=gnr.preset))
