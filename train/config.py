"""Training configuration: frozen, typed dataclasses, presets, config files and dotted overrides.

A run is described by one `TrainConfig` (hashable, so its step-relevant part is a static jit argument). It is
built from a preset name ('tiny', 'paper256', 'config-f'), a JSON file (the `config.json` every workdir holds)
or a Python file with `get_config(arg)`, then adjusted with dotted overrides such as `loss.r1_gamma=2`.

Recipe defaults follow NVlabs/stylegan2-ada-pytorch (`train.py` cfg_specs, `training/loss.py`), see
../shared/docs/stylegan2.md §(b).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import types
import typing
from pathlib import Path
from typing import Any

from nets.stylegan2 import StyleGAN2Config, preset as model_preset


@dataclasses.dataclass(frozen=True)
class LossConfig:
    r1_gamma: float = 10.0            # R1 weight (NV: 10 config-f, 1 paper256); 0 disables R1
    d_reg_every: int = 16             # lazy R1 interval (D steps)
    pl_weight: float = 2.0            # path-length weight; 0 disables it
    pl_decay: float = 0.01            # EMA decay of the running mean path length
    pl_batch_shrink: int = 2          # path-length batch = batch // shrink
    g_reg_every: int = 4              # lazy path-length interval (G steps)
    style_mixing: float = 0.9         # probability that a sample mixes two latents


@dataclasses.dataclass(frozen=True)
class OptConfig:
    g_lr: float = 0.002
    d_lr: float = 0.002
    beta1: float = 0.0
    beta2: float = 0.99
    eps: float = 1e-8


@dataclasses.dataclass(frozen=True)
class EmaConfig:
    kimg: float = 10.0                # half-life of the generator EMA, in thousands of images
    rampup: float | None = None       # NV 'auto': half-life <= rampup * images seen so far (0.05), None = off


@dataclasses.dataclass(frozen=True)
class AdaConfig:
    enabled: bool = True              # adaptive augmentation of everything D sees (p starts at p_init)
    target: float = 0.6               # target for r_t = E[sign(D(real))]
    interval: int = 4                 # steps between p updates
    kimg: float = 500.0               # p can go 0 -> 1 in this many thousand images (100 when fine-tuning)
    p_init: float = 0.0


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    init_from: str | None = None      # a gafu model file (G [+ D]) or a training workdir to start from
    freeze_d: int = 0                 # Freeze-D: the first N discriminator layers from the input side
    freeze_g_res: int = 0             # freeze generator blocks b4..b{freeze_g_res} (0: none)
    freeze_mapping: bool = False      # also freeze the mapping network


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: StyleGAN2Config = StyleGAN2Config()
    loss: LossConfig = LossConfig()
    opt: OptConfig = OptConfig()
    ema: EmaConfig = EmaConfig()
    ada: AdaConfig = AdaConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    data: str | None = None           # dataset for datasets.pipeline.open_source (dir or tfds name)
    batch: int = 32                   # global batch (all devices of all processes)
    steps: int = 10000                # total optimisation steps (each: G step + D step)
    seed: int = 0                     # model init, per-step randomness (fold_in(seed, step)) and data order
    parallel: str = "shard_map"       # 'shard_map' (jax.shard_map over a 1-axis mesh) or 'pmap'
    flip: bool = True                 # dataset x-flips (as NV --mirror)
    log_every: int = 10               # steps between metric lines
    ckpt_every: int = 500             # steps between training checkpoints (and at the end)
    keep: int = 3                     # training checkpoints kept
    sample_every: int = 500           # steps between sample grids (0: never)
    export_every: int = 500           # steps between EMA model-file exports (0: only at the end)
    sample_seeds: int = 16            # the grid shows seeds 0..sample_seeds-1, constant noise

    def __post_init__(self):
        if self.parallel not in ("shard_map", "pmap"):
            raise ValueError(f"parallel must be 'shard_map' or 'pmap'; got {self.parallel!r}")
        for name in ("batch", "steps", "log_every", "ckpt_every", "keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        shrink = self.loss.pl_batch_shrink
        if shrink < 1:
            raise ValueError(f"loss.pl_batch_shrink must be >= 1; got {shrink}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return _from_dict(cls, d, "")

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)


PRESETS = ("tiny", "paper256", "config-f")


def preset(name: str) -> TrainConfig:
    """'tiny' (tests and demo: 32 px, 32 channels), 'paper256' and 'config-f' (NV cfg_specs)."""
    if name == "tiny":
        # NV 'auto' rules at 32 px, batch 8: gamma = 0.0002 res^2 / batch, ema = batch * 10 / 32 kimg.
        return TrainConfig(model=model_preset("tiny"), batch=8, steps=300,
                           loss=LossConfig(r1_gamma=0.0256), opt=OptConfig(g_lr=0.0025, d_lr=0.0025),
                           ema=EmaConfig(kimg=2.5, rampup=0.05), ada=AdaConfig(kimg=100.0),
                           ckpt_every=100, sample_every=100, export_every=100)
    if name == "paper256":
        return TrainConfig(model=model_preset("paper256"), batch=64, loss=LossConfig(r1_gamma=1.0),
                           opt=OptConfig(g_lr=0.0025, d_lr=0.0025), ema=EmaConfig(kimg=20.0))
    if name == "config-f":
        return TrainConfig(model=model_preset("config-f"), batch=32, loss=LossConfig(r1_gamma=10.0),
                           ema=EmaConfig(kimg=10.0))
    raise ValueError(f"unknown training preset {name!r}; choose from {list(PRESETS)}")


# ----------------------------------------------------------------------------------------------------------------
# Config files and overrides


def load_config(spec: str) -> TrainConfig:
    """A preset name, a JSON file (e.g. a workdir's config.json) or `file.py[:arg]` defining get_config(arg)."""
    if spec in PRESETS:
        return preset(spec)
    path_s, arg = (spec.split(".py:", 1)[0] + ".py", spec.split(".py:", 1)[1]) if ".py:" in spec else (spec, "")
    path = Path(path_s)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {path} is not valid JSON: {e}") from None
        return TrainConfig.from_dict(d)
    if path.suffix == ".py":
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        spec_ = importlib.util.spec_from_file_location(f"_gafu_config_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(mod)
        if not hasattr(mod, "get_config"):
            raise ValueError(f"config file {path} defines no get_config(arg)")
        cfg = mod.get_config(arg or None)
        if isinstance(cfg, dict):
            cfg = TrainConfig.from_dict(cfg)
        if not isinstance(cfg, TrainConfig):
            raise ValueError(f"{path}: get_config must return a TrainConfig or a dict; got {type(cfg).__name__}")
        return cfg
    raise ValueError(f"--config {spec!r}: expected a preset ({', '.join(PRESETS)}), a .json file or "
                     f"a .py file (optionally file.py:arg)")


def apply_overrides(cfg: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """Apply 'a.b=value' strings in order. Values are parsed as JSON when possible (so 1e-3, true, null,
    "x") and otherwise taken as strings, then checked against the field's type."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key.path=value")
        cfg = _set_path(cfg, key.strip().split("."), raw.strip(), key.strip())
    return cfg


def _set_path(obj: Any, parts: list[str], raw: str, full: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    name = parts[0]
    if name not in fields:
        raise ValueError(f"unknown config key {full!r}: {type(obj).__name__} has no field {name!r} "
                         f"(fields: {', '.join(sorted(fields))})")
    cur = getattr(obj, name)
    if len(parts) > 1:
        if not dataclasses.is_dataclass(cur):
            raise ValueError(f"config key {full!r}: {name!r} is a {type(cur).__name__}, not a section")
        return dataclasses.replace(obj, **{name: _set_path(cur, parts[1:], raw, full)})
    hint = typing.get_type_hints(type(obj))[name]
    if dataclasses.is_dataclass(hint):
        raise ValueError(f"config key {full!r} is a section; set its fields, e.g. {full}.<field>=...")
    return dataclasses.replace(obj, **{name: _coerce(_parse(raw), hint, full)})


def _parse(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        low = raw.lower()
        return {"none": None, "true": True, "false": False}.get(low, raw)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a field type (bool, int, float, str, X | None); ints are accepted as floats."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{where}: bad value {value!r}")
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}
    if hint in ok:
        if not ok[hint](value):
            raise ValueError(f"config key {where!r} expects {hint.__name__}; got {value!r}")
        return float(value) if hint is float else value
    raise ValueError(f"config key {where!r} has unsupported type {hint}")


def _from_dict(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"config section {prefix or '<root>'!r} must be a mapping; got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown config keys {[prefix + k for k in unknown]} in {cls.__name__}")
    kw = {}
    for k, v in d.items():
        hint, where = hints[k], prefix + k
        if hint is StyleGAN2Config:
            kw[k] = _from_dict(StyleGAN2Config, v, where + ".")
        elif dataclasses.is_dataclass(hint):
            kw[k] = _from_dict(hint, v, where + ".")
        elif cls is StyleGAN2Config:
            kw[k] = v      # StyleGAN2Config validates itself; its fields are plain scalars
        else:
            kw[k] = _coerce(v, hint, where)
    return cls(**kw)


def format_config(cfg: TrainConfig) -> str:
    """The resolved config as indented JSON (what --dry-run prints and config.json holds)."""
    return json.dumps(cfg.to_dict(), indent=1)
