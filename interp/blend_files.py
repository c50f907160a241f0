"""`gafu blend`: read two model files of one architecture, blend their generators, write a new model file atomically.

The family comes from the files (nets.registry): its generator entry, its resolution-keyed scope, its config's
BLEND_FREE_FIELDS and its sampler for the figure. The toonify mode is StyleGAN2's (it knows StyleGAN2's layers).

Recipes (BlendSpec.mode):
  toonify  Pinkney's blend_models.py exactly (interp.blend.blend_models): `resolution` is the last block that
           model_1 (LOW) supplies whole at level 0; mapping, w_avg, noise maps and b4/conv1 come from LOW.
  swap     the clean mode: `resolution` is the first block taken from HIGH; with blend_width a logistic over
           blocks centred between resolution/2 and resolution. Mapping and w_avg come with LOW (they follow the
           lowest block), each noise map with its block.
  lerp     ESRGAN network interpolation, every leaf (1 - alpha) * LOW + alpha * HIGH (noise maps picked whole).
  schedule an explicit {R: alpha} per block resolution (alpha = share of HIGH); mapping follows the lowest block.
D, when present, is copied from LOW (as blend_models.py copies G and D from its low-resolution pickle), and so is
the config.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from interp import blend as B
from interp.figure import swap_figure
from nets import images, modelfile, paths, registry

PyTree = Any
MODES = ("toonify", "swap", "lerp", "schedule")


@dataclasses.dataclass(frozen=True)
class BlendSpec:
    """How to blend LOW (model_1) and HIGH (model_2) generator variables."""
    mode: str                               # one of MODES
    resolution: int | None = None           # toonify: JP's resolution; swap: first block from HIGH
    level: int = 0                          # toonify only: switch at conv block 0 or 1
    blend_width: float | None = None        # toonify: in positions (half blocks); swap: in blocks
    alpha: float | None = None              # lerp: share of HIGH
    schedule: dict[int, float] | None = None  # schedule: share of HIGH per block resolution

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown blend mode {self.mode!r}; choose from {MODES}")
        need = {"toonify": "resolution", "swap": "resolution", "lerp": "alpha", "schedule": "schedule"}[self.mode]
        if getattr(self, need) is None:
            raise ValueError(f"blend mode {self.mode!r} needs {need}")
        if self.blend_width is not None and self.mode not in ("toonify", "swap"):
            raise ValueError(f"blend_width applies to the toonify and swap modes, not {self.mode!r}")
        if self.level != 0 and self.mode != "toonify":
            raise ValueError(f"level applies to the toonify mode only, not {self.mode!r}")

    @property
    def sweepable(self) -> bool:
        return self.mode in ("toonify", "swap")

    def at(self, resolution: int) -> "BlendSpec":
        return dataclasses.replace(self, resolution=resolution)

    def apply(self, low: PyTree, high: PyTree, names: tuple[str, str] = ("LOW", "HIGH"),
              scope: tuple[str, ...] = paths.GENERATOR_SCOPE) -> PyTree:
        """Blended generator variables; `scope` = the family's resolution-keyed subtrees (nets.registry.Arch)."""
        if self.mode == "toonify":
            return B.blend_models(low, high, self.resolution, self.level, self.blend_width, names=names)
        if self.mode == "swap" and self.blend_width is None:
            return B.swap(low, high, self.resolution, scope=scope, names=names)
        if self.mode == "swap":
            return B.smooth_swap(low, high, self.resolution, self.blend_width, scope=scope, names=names)
        if self.mode == "lerp":
            return B.blend(low, high, self.alpha, global_alpha=self.alpha, scope=scope, names=names)
        return B.blend(low, high, dict(self.schedule), scope=scope, names=names)

    def to_meta(self) -> dict:
        d = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if self.schedule is not None:
            d["schedule"] = {str(k): float(v) for k, v in self.schedule.items()}
        return d


@dataclasses.dataclass
class BlendResult:
    model: Path
    figure: Path | None
    figure_rows: list[str]


def blend_files(low: str, high: str, out: str, spec: BlendSpec, *, figure: str | None = None,
                seeds: tuple[int, ...] = tuple(range(6)), psi: float = 1.0, overwrite: bool = False) -> BlendResult:
    """Blend the generators of two model files into `out` (and optionally write the swap figure PNG).

    Everything is read and checked, and the figure rendered, before anything is written; a failure leaves no
    output behind.
    """
    out_path = images.check_output(out, overwrite=overwrite, folder=True)
    if figure:
        images.check_output(figure, overwrite=overwrite)
    if figure and not spec.sweepable:
        raise ValueError(f"the swap figure sweeps the swap resolution: use the toonify or swap mode, "
                         f"not {spec.mode!r}")
    arch, cfg, lo = registry.load(low)
    _, cfg_hi, hi = registry.load(high)
    registry.check_same_arch(cfg, cfg_hi, (str(lo.path), str(hi.path)))     # the output keeps LOW's config
    if spec.mode == "toonify" and arch.name != "stylegan2":
        raise ValueError(f"--toonify follows Pinkney's StyleGAN2 layer positions (const/conv0, conv1/torgb); "
                         f"{lo.path} is a {arch.name!r} model: use --swap R (blocks from R up from HIGH)")
    g_lo, g_hi = registry.generator_of(arch, lo), registry.generator_of(arch, hi)
    names = (f"LOW {lo.path}", f"HIGH {hi.path}")
    g_out = spec.apply(g_lo, g_hi, names, arch.scope)

    grid, rows = None, []
    if figure:
        sweep = sorted(B.resolutions(g_lo, arch.scope), reverse=True)          # LOW-most blend first
        rows = ["LOW"] + [f"{spec.mode} at {r}" for r in sweep] + ["HIGH"]
        grid = swap_figure(lambda g: arch.sample(cfg, g, list(seeds), psi=psi), g_lo, g_hi,
                           lambda r: spec.at(r).apply(g_lo, g_hi, names, arch.scope), sweep)

    variables = {**lo.variables, arch.generator: g_out}          # other networks (D) copied from LOW
    meta = {"blend": {**spec.to_meta(), "low": str(lo.path), "high": str(hi.path),
                      "D": "copied from low" if "D" in variables else "absent",
                      "share_of_high": describe(spec, g_lo, arch.scope)},
            "parents": {"low": lo.meta, "high": hi.meta}}
    path = modelfile.save_model(out_path, variables, lo.config, arch=arch.name, meta=meta, overwrite=overwrite)
    fig_path = images.write_png(figure, grid) if figure else None
    return BlendResult(path, fig_path, rows)


def describe(spec: BlendSpec, g: PyTree, scope: tuple[str, ...] = paths.GENERATOR_SCOPE) -> dict[str, float]:
    """{layer path: share of HIGH} for every layer of the blended generator (probed on scalar trees)."""
    lo = jax.tree.map(lambda x: np.zeros((), np.float32), g)
    hi = jax.tree.map(lambda x: np.ones((), np.float32), g)
    shares: dict[str, float] = {}
    for p, x in jax.tree_util.tree_flatten_with_path(spec.apply(lo, hi, scope=scope))[0]:
        shares.setdefault(paths.path_str(paths.layer_path(p)), round(float(x), 6))
    return shares
