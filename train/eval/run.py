"""The metric runner: `gafu eval` and training's `metrics` call `evaluate`.

Metric names follow NVlabs/stylegan2-ada-pytorch's metric_main.py: `fid50k_full` (50k fakes against all reals),
`kid50k_full` (against up to 1M reals; 100 subsets of at most 1000), `fid50k` / `kid50k` (reals capped at the
number of fakes), any count in place of 50 (`fid10k`, `fid1k`, or `fid200` without the k: 200 images) and `ppl2_wend` / `ppl_wend` (perceptual.py).
`num` overrides the number of fakes. Reals' statistics are shared by the metrics of one call and cached on disk
for dataset folders and tfds names (stats.py).
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets.pipeline import open_split
from nets import images
from train.eval import fakes, metrics, stats

FULL_REALS = {"fid": None, "kid": 1_000_000}          # NV's max_real of the *_full metrics (None: all)
_NAME = re.compile(r"^(fid|kid)(\d+)(k?)(_full)?$")


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str                  # 'fid', 'kid', 'ppl'
    num_gen: int
    max_real: int | None       # None: every real image
    options: tuple = ()


def parse_metric(name: str, num: int | None = None) -> MetricSpec:
    """'fid50k_full' -> MetricSpec; `num` (if given) replaces the number of fakes (and the real cap)."""
    from train.eval import perceptual

    m = _NAME.match(name)
    if m:
        kind, count, full = m.group(1), int(m.group(2)) * (1000 if m.group(3) else 1), bool(m.group(4))
        n = num or count
        if n < 2:
            raise ValueError(f"metric {name!r}: needs at least 2 generated images")
        return MetricSpec(name, kind, n, FULL_REALS[kind] if full else n)
    if name in perceptual.PPL_METRICS:
        return MetricSpec(name, "ppl", num or 50_000, 0, perceptual.PPL_METRICS[name])
    raise ValueError(f"unknown metric {name!r}; known: fid<N>k[_full], kid<N>k[_full] (e.g. fid50k_full, "
                     f"kid10k; fid<N> counts single images), {', '.join(perceptual.PPL_METRICS)}")


def parse_metrics(spec: str | Sequence[str], num: int | None = None) -> list[MetricSpec]:
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise ValueError("no metrics named (e.g. --metrics fid50k_full,kid50k_full)")
    if num is not None and num < 2:
        raise ValueError(f"--num must be >= 2 (a covariance needs two images); got {num}")
    return [parse_metric(n, num) for n in names]


@dataclasses.dataclass
class Evaluator:
    """Everything one `evaluate` call shares: the model, the data, the Inception embedder, reals' statistics."""
    model: fakes.Model
    data: Any
    split: str
    source_split: str | None
    inception: stats.Embedder | None
    network: str
    progress: bool = True
    log: Callable[[str], None] = print
    _reals: dict = dataclasses.field(default_factory=dict)

    def reals(self, max_real: int | None) -> stats.FeatureStats:
        src = open_split(self.data, self.split)
        num = len(src) if max_real is None else min(max_real, len(src))
        if num < 2:
            raise ValueError(f"split {self.split!r} of {self.data} has {len(src)} images; FID/KID need >= 2")
        if num in self._reals:
            return self._reals[num]
        res = self.model.resolution
        shape = tuple(src[0]["image"].shape)
        if shape[:2] != (res, res):
            raise ValueError(f"split {self.split!r} of {self.data} holds {shape[0]}x{shape[1]} images; the model "
                             f"{self.model.path} makes {res}x{res} ones")
        key = None
        if isinstance(self.data, (str, Path)):
            key = stats.cache_key(self.data, self.split, res, num, self.network)
            cached = stats.load_cached(key)
            if cached is not None:
                self.log(f"reals: {num} images of {self.data}:{self.split} from the cache "
                         f"{stats.cache_path(key)}")
                self._reals[num] = cached
                return cached
        feats = stats.embed_batches(self.inception, fakes.real_batches(self.data, self.split, num,
                                                                       self.inception.batch),
                                    num, f"reals {self.split}", self.progress)
        st = stats.FeatureStats.of(feats)
        if key is not None:
            stats.save_cached(key, st)
        self._reals[num] = st
        return st

    def fakes(self, num: int) -> stats.FeatureStats:
        batches = fakes.fake_batches(self.model, num, self.inception.batch, self.data, self.source_split)
        return stats.FeatureStats.of(stats.embed_batches(self.inception, batches, num, "fakes", self.progress))


def compute(ev: Evaluator, spec: MetricSpec) -> tuple[dict[str, float], int, int]:
    """({result name: value}, fakes used, reals used) of one metric."""
    if spec.kind == "ppl":
        from train.eval import perceptual
        return {spec.name: perceptual.ppl(ev.model, spec.num_gen, *spec.options, progress=ev.progress)}, \
            spec.num_gen, 0
    real = ev.reals(spec.max_real)
    fake = ev.fakes(spec.num_gen)
    if spec.kind == "fid":
        value = metrics.frechet_distance_features(fake.features, real.features)
    else:
        value = metrics.kid(fake.features, real.features, num_subsets=100, max_subset_size=1000)
    return {spec.name: value}, fake.num, real.num


def jsonl_path(model_path: str | Path, name: str) -> Path:
    """NV's metric-<name>.jsonl, next to the model file (a model file is a folder: beside it)."""
    return Path(model_path).absolute().parent / f"metric-{name}.jsonl"


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line (read, add, atomic rename: a crash never leaves a torn line)."""
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    images.atomic_write_bytes(path, old + (json.dumps(record) + "\n").encode())


def evaluate(ev: Evaluator, specs: Sequence[MetricSpec], write: Callable[[MetricSpec, dict], None] | None = None
             ) -> list[dict]:
    """Run every metric; one record per metric (NV's fields, plus what was compared), passed to `write`."""
    records = []
    for spec in specs:
        t0 = time.time()
        results, n_gen, n_real = compute(ev, spec)
        dt = time.time() - t0
        rec = {"results": results, "metric": spec.name, "total_time": dt,
               "total_time_str": time.strftime("%Hh %Mm %Ss", time.gmtime(dt)), "model": str(ev.model.path),
               "family": ev.model.family, "dataset": None if ev.data is None else str(ev.data),
               "split": ev.split, "num_gen": n_gen, "num_real": n_real, "network": ev.network,
               "timestamp": time.time()}
        if write is not None:
            write(spec, rec)
        records.append(rec)
    return records


def format_table(records: Sequence[dict]) -> str:
    rows = [("metric", "value", "fakes", "reals", "seconds")]
    for r in records:
        for k, v in r["results"].items():
            rows.append((k, f"{v:.4g}", str(r["num_gen"]), str(r["num_real"] or "-"), f"{r['total_time']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in rows)


def needs_inception(specs: Sequence[MetricSpec]) -> bool:
    return any(s.kind in ("fid", "kid") for s in specs)


def make_evaluator(model: fakes.Model, data: Any, specs: Sequence[MetricSpec], *, inception: str | None = None,
                   any_inception: bool = False, batch: int = 64, split: str | None = None,
                   source_split: str | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> Evaluator:
    """Check what the metrics need (the data, the Inception file) before anything long runs."""
    from nets import inception as inc
    from nets.inception_weights import load_inception

    if batch < 1:
        raise ValueError(f"--batch must be >= 1; got {batch}")
    split = split or fakes.DEFAULT_SPLITS[model.family][0]
    embedder, network = None, "-"
    if needs_inception(specs):
        if data is None:
            raise ValueError(f"{', '.join(s.name for s in specs if s.kind != 'ppl')} compare with real images: "
                             f"pass --data DATASET")
        open_split(data, split)                                    # fails fast on a missing split
        variables, network = load_inception(inception, allow_other=any_inception)
        embedder = stats.Embedder(lambda v, x: inc.FIDInception().apply(v, x), variables, batch)
    return Evaluator(model, data, split, source_split, embedder, network, progress, log)
