"""The metric runner: `gafu eval` and training's `metrics` call `evaluate`.

Metric names follow NVlabs/stylegan2-ada-pytorch's metric_main.py: `fid50k_full` (50k fakes against all reals),
`kid50k_full` (against up to 1M reals; 100 subsets of at most 1000), `pr50k3_full` (precision and recall of 50k
fakes against up to 200k reals, neighbourhood 3, on NV's VGG-16 features), `fid50k` / `kid50k` / `pr50k3` (reals
capped at the number of fakes), any count in place of 50 (`fid10k`, `pr1k5`, or `fid200` without the k: 200
images; pr always takes the k, so fewer go through `num`) and `ppl2_wend` / `ppl_wend` (perceptual.py).
`lpips_div<N>[x<S>]` (translation models): the LPIPS diversity of N test sources under S styles or seeds each
(default 10). `dfid<N>[x<S>]` (translation models): the diversity FID, the mean over N test sources of the FID
between one source's S translations (default 100) and all the target split's reals; a model that ignores its style
code makes one picture per source and scores at least tr(real covariance). `num` overrides the number of fakes (of
sources for lpips_div and dfid). Reals' statistics are shared by the metrics of one call and cached on disk for
dataset folders and tfds names (stats.py), keyed by the feature network's hash.
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets.pipeline import open_split
from nets import images
from train.eval import fakes, metrics, stats

FULL_REALS = {"fid": None, "kid": 1_000_000, "pr": 200_000}    # NV's max_real of the *_full metrics (None: all)
NETWORK = {"fid": "inception", "kid": "inception", "dfid": "inception", "pr": "vgg16"}  # each kind's network
PR_BATCH = 10_000                                       # NV's row_batch_size = col_batch_size of pr50k3(_full)
DIV_STYLES = 10                                         # styles per source of lpips_div<N> without x<S>
DIVERSITY_KINDS = {"lpips_div": "LPIPS diversity", "dfid": "the diversity FID"}   # metrics of sources x styles
DFID_STYLES = 100                                       # styles per source of dfid<N> without x<S>
_NAME = re.compile(r"^(fid|kid)(\d+)(k?)(_full)?$")
_PR = re.compile(r"^pr(\d+)k(\d+)(_full)?$")    # the k is required: pr103 would be ambiguous
_DIV = re.compile(r"^(lpips_div|dfid)(\d+)(k?)(?:x(\d+))?$")


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str                  # 'fid', 'kid', 'pr', 'ppl', 'lpips_div', 'dfid'
    num_gen: int               # fakes (lpips_div, dfid: sources)
    max_real: int | None       # None: every real image
    options: tuple = ()        # pr: (neighbourhood,); ppl: perceptual.PPL_METRICS's; lpips_div, dfid: (styles,)

    @property
    def network(self) -> str | None:
        """'inception', 'vgg16', or None (the metric compares no feature statistics)."""
        return NETWORK.get(self.kind)


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
    m = _PR.match(name)
    if m:
        count, k, full = int(m.group(1)) * 1000, int(m.group(2)), bool(m.group(3))
        n = num or count
        if k < 1 or n <= k:
            raise ValueError(f"metric {name!r}: a neighbourhood of {k} needs k >= 1 and more than k fakes")
        return MetricSpec(name, "pr", n, FULL_REALS["pr"] if full else n, (k,))
    m = _DIV.match(name)
    if m:
        kind = m.group(1)
        sources = num or int(m.group(2)) * (1000 if m.group(3) else 1)
        styles = int(m.group(4) or (DIV_STYLES if kind == "lpips_div" else DFID_STYLES))
        if sources < 1 or styles < 2:
            raise ValueError(f"metric {name!r}: needs at least 1 source and 2 styles per source")
        return MetricSpec(name, kind, sources, 0 if kind == "lpips_div" else None, (styles,))
    if name in perceptual.PPL_METRICS:
        return MetricSpec(name, "ppl", num or 50_000, 0, perceptual.PPL_METRICS[name])
    raise ValueError(f"unknown metric {name!r}; known: fid<N>k[_full], kid<N>k[_full], pr<N>k<K>[_full] (e.g. "
                     f"fid50k_full, kid10k, pr50k3_full; fid<N> counts single images), lpips_div<N>[x<S>], "
                     f"{', '.join(perceptual.PPL_METRICS)}")


def parse_metrics(spec: str | Sequence[str], num: int | None = None) -> list[MetricSpec]:
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise ValueError("no metrics named (e.g. --metrics fid50k_full,kid50k_full)")
    if num is not None and num < 2:
        raise ValueError(f"--num must be >= 2 (a covariance needs two images); got {num}")
    return [parse_metric(n, num) for n in names]


@dataclasses.dataclass
class Evaluator:
    """Everything one `evaluate` call shares: the model, the data, the feature embedders ({'inception': ...,
    'vgg16': ...}, those the metrics need) with their network ids, and the reals' statistics per network."""
    model: fakes.Model
    data: Any
    split: str
    source_split: str | None
    embedders: dict[str, stats.Embedder]
    networks: dict[str, str]
    progress: bool = True
    log: Callable[[str], None] = print
    _reals: dict = dataclasses.field(default_factory=dict)

    def reals(self, max_real: int | None, net: str = "inception") -> stats.FeatureStats:
        src = open_split(self.data, self.split)
        num = len(src) if max_real is None else min(max_real, len(src))
        if num < 2:
            raise ValueError(f"split {self.split!r} of {self.data} has {len(src)} images; FID/KID/PR need >= 2")
        if (net, num) in self._reals:
            return self._reals[net, num]
        res = self.model.resolution
        shape = tuple(src[0]["image"].shape)
        if shape[:2] != (res, res):
            raise ValueError(f"split {self.split!r} of {self.data} holds {shape[0]}x{shape[1]} images; the model "
                             f"{self.model.path} makes {res}x{res} ones")
        key = None
        if isinstance(self.data, (str, Path)):
            key = stats.cache_key(self.data, self.split, res, num, self.networks[net])
            cached = stats.load_cached(key)
            if cached is not None:
                self.log(f"reals: {num} images of {self.data}:{self.split} from the cache "
                         f"{stats.cache_path(key)}")
                self._reals[net, num] = cached
                return cached
        emb = self.embedders[net]
        feats = stats.embed_batches(emb, fakes.real_batches(self.data, self.split, num, emb.batch), num,
                                    f"reals {self.split}", self.progress)
        st = stats.FeatureStats.of(feats)
        if key is not None:
            stats.save_cached(key, st)
        self._reals[net, num] = st
        return st

    def fakes(self, num: int, net: str = "inception") -> stats.FeatureStats:
        emb = self.embedders[net]
        batches = fakes.fake_batches(self.model, num, emb.batch, self.data, self.source_split)
        return stats.FeatureStats.of(stats.embed_batches(emb, batches, num, "fakes", self.progress))


def compute(ev: Evaluator, spec: MetricSpec) -> tuple[dict[str, float], int, int]:
    """({result name: value}, fakes used, reals used) of one metric."""
    if spec.kind == "ppl":
        from train.eval import perceptual
        return {spec.name: perceptual.ppl(ev.model, spec.num_gen, *spec.options, progress=ev.progress)}, \
            spec.num_gen, 0
    if spec.kind == "lpips_div":
        from train.eval import perceptual
        styles = spec.options[0]
        outputs = fakes.diversity_batches(ev.model, ev.data, spec.num_gen, styles, ev.source_split)
        return {spec.name: perceptual.lpips_diversity(outputs, progress=ev.progress, total=spec.num_gen)}, \
            spec.num_gen * styles, 0
    real = ev.reals(spec.max_real, spec.network)
    if spec.kind == "dfid":
        return {spec.name: diversity_fid(ev, spec, real)}, spec.num_gen * spec.options[0], real.num
    fake = ev.fakes(spec.num_gen, spec.network)
    if spec.kind == "fid":
        results = {spec.name: metrics.frechet_distance_features(fake.features, real.features)}
    elif spec.kind == "kid":
        results = {spec.name: metrics.kid(fake.features, real.features, num_subsets=100, max_subset_size=1000)}
    else:                                                   # NV's results: <name>_precision, <name>_recall
        p, r = metrics.precision_recall(real.features, fake.features, k=spec.options[0], batch=PR_BATCH)
        results = {f"{spec.name}_precision": p, f"{spec.name}_recall": r}
    return results, fake.num, real.num


def diversity_fid(ev: Evaluator, spec: MetricSpec, real: stats.FeatureStats) -> float:
    """Mean over the sources of the FID of one source's translations (fakes.diversity_batches) against `real`."""
    from tqdm.auto import tqdm

    emb, styles = ev.embedders[spec.network], spec.options[0]
    outputs = fakes.diversity_batches(ev.model, ev.data, spec.num_gen, styles, ev.source_split)
    fids = []
    for out in tqdm(outputs, total=spec.num_gen, desc=spec.name, unit="source", disable=not ev.progress,
                    dynamic_ncols=True):                                           # out: uint8 [S,R,R,C]
        chunks = (out[i:i + emb.batch] for i in range(0, styles, emb.batch))
        feats = stats.embed_batches(emb, chunks, styles, spec.name, progress=False)
        fids.append(metrics.frechet_distance_features(feats, real.features))
    return float(np.mean(fids))


def jsonl_path(model_path: str | Path, name: str) -> Path:
    """NV's metric-<name>.jsonl, next to the model file (a model file is a folder: beside it)."""
    return Path(model_path).absolute().parent / f"metric-{name}.jsonl"


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line (read, add, atomic rename: a crash never leaves a torn line)."""
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    images.atomic_write_bytes(path, old + (json.dumps(record) + "\n").encode())


def network_id(ev: Evaluator, spec: MetricSpec) -> str:
    """The feature network a record's value depends on: the loaded file's id, or the bundled LPIPS."""
    if spec.network:
        return ev.networks[spec.network]
    return "lpips-vgg16-bundled" if spec.kind in ("ppl", "lpips_div") else "-"


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
               "split": ev.split, "num_gen": n_gen, "num_real": n_real, "network": network_id(ev, spec),
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
    return any(s.network == "inception" for s in specs)


def needs_vgg16(specs: Sequence[MetricSpec]) -> bool:
    return any(s.network == "vgg16" for s in specs)


def check_family(family: str, specs: Sequence[MetricSpec], what: str = "the model") -> None:
    """Metrics that only some families have, refused before anything runs (`what`: the model file, or the run)."""
    for s in specs:
        if s.kind == "ppl" and family != "stylegan2":
            raise ValueError(f"{s.name}: PPL walks a StyleGAN2 latent space; {what} is a {family} model")
        if s.kind in DIVERSITY_KINDS and family not in fakes.DIVERSITY_FAMILIES:
            raise ValueError(f"{s.name}: {DIVERSITY_KINDS[s.kind]} is the spread of one source's translations "
                             f"under different styles or seeds; {what} is a {family} model without sources "
                             f"(for StyleGAN2, recall (pr50k3) measures coverage)")


def make_evaluator(model: fakes.Model, data: Any, specs: Sequence[MetricSpec], *, inception: str | None = None,
                   any_inception: bool = False, vgg16: str | None = None, any_vgg16: bool = False,
                   batch: int = 64, split: str | None = None, source_split: str | None = None,
                   progress: bool = True, log: Callable[[str], None] = print) -> Evaluator:
    """Check what the metrics need (the family, the data, the weight files) before anything long runs."""
    if batch < 1:
        raise ValueError(f"--batch must be >= 1; got {batch}")
    check_family(model.family, specs, str(model.path))
    split = split or fakes.DEFAULT_SPLITS[model.family][0]
    compared = [s.name for s in specs if s.network]
    diversity = [s.name for s in specs if s.kind in DIVERSITY_KINDS]
    if (compared or diversity) and data is None:
        names = ", ".join(dict.fromkeys(compared + diversity))
        raise ValueError(f"{names} need real images or test sources: pass --data DATASET")
    if compared:
        open_split(data, split)                                    # fails fast on a missing split
    if diversity or (compared and model.family != "stylegan2"):
        open_split(data, source_split or fakes.DEFAULT_SPLITS[model.family][1])
    embedders, networks = {}, {}
    if needs_inception(specs):
        from nets import inception as inc
        from nets.inception_weights import load_inception

        variables, networks["inception"] = load_inception(inception, allow_other=any_inception)
        embedders["inception"] = stats.Embedder(lambda v, x: inc.FIDInception().apply(v, x), variables, batch)
    if needs_vgg16(specs):
        from nets import nv_vgg16
        from nets.nv_vgg16_weights import load_vgg16

        variables, networks["vgg16"] = load_vgg16(vgg16, allow_other=any_vgg16)
        embedders["vgg16"] = stats.Embedder(lambda v, x: nv_vgg16.NVVGG16().apply(v, x), variables, batch)
    return Evaluator(model, data, split, source_split, embedders, networks, progress, log)
