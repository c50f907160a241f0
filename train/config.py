"""The run configuration: one `TrainConfig` for every family, its presets, config files and dotted overrides.

A TrainConfig holds the run-level fields (data, batch, steps, seed, device mapping, intervals, keep) that the
generic core uses, the family's name, and the family's own section `hparams` (a frozen dataclass owned by the
family's recipe: model, losses, optimiser, EMA, augmentation, fine-tuning). The compiled step depends on `hparams`
only (and `lazy_dispatch`: one program per pattern of due lazy phases, or one for all), so changing any other
run-level field never recompiles.

As JSON (`config.json` in every workdir) and for `--set`, the section's fields sit beside the run fields:
{"family": "stylegan2", "batch": 32, ..., "model": {...}, "loss": {...}}, so `--set batch=64` and
`--set model.resolution=256` both work. A config is a preset name (any family's), a JSON file, or
`file.py[:arg]` defining `get_config(arg)`. JSON written before the family seam (no "family", and
`finetune.init_from` instead of the run-level `init_from`) still reads, as StyleGAN2.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

from nets import configs
from train import recipe as recipes

RUN_ONLY = ("family", "hparams")           # TrainConfig fields that are not plain run-level scalars


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    family: str = "stylegan2"
    hparams: Any = None               # the family's section (None: the family's defaults)
    data: str | None = None           # dataset folder or tfds name (datasets.pipeline.open_source)
    init_from: str | None = None      # a gafu model file or a training workdir to start from (fine-tuning)
    batch: int = 32                   # global batch (all devices of all processes)
    steps: int = 10000                # total optimisation steps
    seed: int = 0                     # model init, per-step randomness (fold_in(seed, step)) and data order
    parallel: str = "shard_map"       # 'shard_map' (jax.shard_map over a 1-axis mesh) or 'pmap'
    lazy_dispatch: str = "host"       # lazy regularisers (R1, path length): 'host' compiles one step per pattern
    #   of due phases and picks it by step number; 'device' one step with lax.cond branches (one compile, but
    #   XLA:CPU runs convolution gradients inside a branch 20-35x slower)
    flip: bool = True                 # dataset x-flips (as NV --mirror)
    log_every: int = 10               # steps between metric lines
    ckpt_every: int = 500             # steps between training checkpoints (and at the end)
    keep: int = 3                     # training checkpoints kept
    sample_every: int = 500           # steps between sample grids (0: never)
    export_every: int = 500           # steps between model-file exports (0: only at the end)
    sample_seeds: int = 16            # samples in each grid
    metrics: str = ""                 # comma-separated `gafu eval` metrics computed at every export (NV --metrics)
    metrics_inception: str | None = None    # the FID Inception weights for them (default: gafu eval's lookup)
    metrics_any_inception: bool = False     # accept Inception weights other than pytorch-fid's
    metrics_vgg16: str | None = None        # NV's metric vgg16.pt for precision/recall (default: gafu eval's lookup)
    metrics_any_vgg16: bool = False         # accept VGG-16 weights other than NV's

    def __post_init__(self):
        rec = recipes.get(self.family)
        if self.hparams is None:
            object.__setattr__(self, "hparams", rec.hparams())
        if not isinstance(self.hparams, rec.hparams):
            raise ValueError(f"family {self.family!r} takes hparams of type {rec.hparams.__name__}; got "
                             f"{type(self.hparams).__name__}")
        if self.parallel not in ("shard_map", "pmap"):
            raise ValueError(f"parallel must be 'shard_map' or 'pmap'; got {self.parallel!r}")
        if self.lazy_dispatch not in ("host", "device"):
            raise ValueError(f"lazy_dispatch must be 'host' or 'device'; got {self.lazy_dispatch!r}")
        for name in ("batch", "steps", "log_every", "ckpt_every", "keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        for name in ("sample_every", "export_every", "sample_seeds", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if self.metrics:
            from train.eval.run import parse_metrics   # checks the names; imported only when metrics are asked
            parse_metrics(self.metrics)

    @property
    def recipe(self) -> recipes.Recipe:
        return recipes.get(self.family)

    def to_dict(self) -> dict:
        run = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in RUN_ONLY}
        return {"family": self.family, **run, **dataclasses.asdict(self.hparams)}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a training config must be a mapping; got {type(d).__name__}")
        d = _migrate(d)
        family = d.pop("family")
        run_names = {f.name for f in dataclasses.fields(cls)} - set(RUN_ONLY)
        run = {k: configs.coerce(v, _run_hints()[k], k) for k, v in d.items() if k in run_names}
        rest = {k: v for k, v in d.items() if k not in run_names}
        return cls(family=family, hparams=configs.from_dict(recipes.get(family).hparams, rest), **run)

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    def with_hparams(self, **kw) -> "TrainConfig":
        """A copy with fields of the family section replaced (e.g. cfg.with_hparams(model=...))."""
        return self.replace(hparams=dataclasses.replace(self.hparams, **kw))


def _run_hints() -> dict:
    return configs.field_hints(TrainConfig)


def _migrate(d: dict) -> dict:
    """Configs written before the family seam: no "family" (they were all StyleGAN2) and init_from inside
    "finetune". Returns a new dict in today's form."""
    d = dict(d)
    d.setdefault("family", "stylegan2")
    ft = d.get("finetune")
    if isinstance(ft, dict) and "init_from" in ft:
        ft = dict(ft)
        old = ft.pop("init_from")
        d["finetune"] = ft
        d.setdefault("init_from", old)
    return d


# ----------------------------------------------------------------------------------------------------------------
# Presets, config files and overrides


def presets() -> dict[str, Any]:
    """Every family's presets: name -> factory of a TrainConfig."""
    out: dict[str, Any] = {}
    for rec in recipes.all_recipes():
        clash = sorted(set(out) & set(rec.presets))
        if clash:
            raise ValueError(f"preset names {clash} are defined by two families")
        out.update(rec.presets)
    return out


def preset(name: str) -> TrainConfig:
    table = presets()
    if name not in table:
        raise ValueError(f"unknown training preset {name!r}; choose from {sorted(table)}")
    return table[name]()


def load_config(spec: str) -> TrainConfig:
    """A preset name, a JSON file (e.g. a workdir's config.json) or `file.py[:arg]` defining get_config(arg)."""
    if spec in presets():
        return preset(spec)
    path_s, arg = (spec.split(".py:", 1)[0] + ".py", spec.split(".py:", 1)[1]) if ".py:" in spec else (spec, "")
    path = Path(path_s)
    if path.suffix not in (".json", ".py"):
        raise ValueError(f"--config {spec!r}: expected a preset ({', '.join(sorted(presets()))}), a .json file "
                         f"or a .py file (optionally file.py:arg)")
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.suffix == ".json":
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {path} is not valid JSON: {e}") from None
        try:
            return TrainConfig.from_dict(d)
        except ValueError as e:
            raise ValueError(f"config file {path}: {e}") from None
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


def apply_overrides(cfg: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """Apply 'a.b=value' strings in order (nets.configs grammar). A key names a run field (`batch`), the family
    (`family=...`, which resets the section to that family's defaults) or a field of the section
    (`loss.r1_gamma`)."""
    run_names = {f.name for f in dataclasses.fields(TrainConfig)} - set(RUN_ONLY)
    for item in overrides:
        parts, raw = configs.split_assignment(item)
        full, value = ".".join(parts), configs.parse_value(raw)
        if parts == ["family"]:
            cfg = cfg.replace(family=configs.coerce(value, str, "family"), hparams=None)
        elif parts[0] in run_names:
            cfg = configs.set_path(cfg, parts, value, full)
        elif full == "finetune.init_from":
            raise ValueError("config key 'finetune.init_from' is now the run-level 'init_from' (or --init-from)")
        else:
            try:
                cfg = cfg.replace(hparams=configs.set_path(cfg.hparams, parts, value, full))
            except ValueError as e:
                if "unknown config key" not in str(e) or len(parts) > 1:
                    raise
                raise ValueError(f"unknown config key {full!r}: neither a run field ({', '.join(sorted(run_names))}) "
                                 f"nor a field of the {cfg.family} section "
                                 f"({', '.join(f.name for f in dataclasses.fields(cfg.hparams))})") from None
    return cfg


def resolve_config(spec: str | None, workdir: str | Path, sets: list[str],
                   shortcuts: dict[str, Any] | None = None) -> TrainConfig:
    """What `gafu train` runs: the config `spec` (default: the workdir's config.json, to resume), then the `--set`
    overrides, then the flag shortcuts ({"steps": 30, "data": "dir", ...}; None values are left out)."""
    if spec is None:
        saved = Path(workdir) / "config.json"
        if not saved.is_file():
            raise ValueError(f"--config is required ({saved} does not exist, so there is nothing to resume)")
        spec = str(saved)
    extra = [f"{k}={json.dumps(v)}" for k, v in (shortcuts or {}).items() if v is not None]
    return apply_overrides(load_config(spec), list(sets) + extra)


def format_config(cfg: TrainConfig) -> str:
    """The resolved config as indented JSON (what --dry-run prints and config.json holds)."""
    return json.dumps(cfg.to_dict(), indent=1)
