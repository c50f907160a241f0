"""Running a build: preparing images in a process pool, counting what happened, and the atomic write.

A build is written into a hidden temporary folder next to the target, fsynced, and renamed onto it only when
tfds has finished every split, so an interrupted build (exception, Ctrl-C, or a killed process) never leaves a
folder that looks like a complete dataset, even after a power loss. Stale temporary folders of the same target
are removed by the next build, which holds the target's lock (datasets/lock.py): no other build can own them.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from datasets.imageio import ImageSpec, Prepared, prepare_file, prepare_image
from datasets.sketch import ROUGH_SIZE, SketchCache, sketch_png

SUMMARY_FILE = "build_summary.json"


@dataclasses.dataclass(frozen=True)
class Job:
    """One example to prepare: a file path, encoded bytes or an array, plus features passed through as is."""
    key: str
    source: Any                               # Path | bytes | np.ndarray [H,W,3] uint8
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class BuildSummary:
    """What a build kept, converted and skipped, and why. Printed by `gafu prepare-data`, saved with the data."""
    name: str = ""
    path: str = ""
    resolution: int = 0
    kept: dict[str, int] = dataclasses.field(default_factory=dict)                 # split -> examples written
    converted: collections.Counter = dataclasses.field(default_factory=collections.Counter)   # reason -> images
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)     # reason -> images
    samples: dict[str, list[str]] = dataclasses.field(default_factory=dict)        # reason -> a few "key: detail"
    sketches: dict[str, int] = dataclasses.field(default_factory=lambda: {"computed": 0, "cached": 0})
    converted_images: int = 0     # images kept that needed at least one conversion (one may have several reasons)
    seconds: float = 0.0

    @property
    def total_kept(self) -> int:
        return sum(self.kept.values())

    def add(self, split: str, p: Prepared) -> None:
        if p.skipped is not None:
            self.skip(p.key, p.skipped, p.detail)
            return
        self.kept[split] = self.kept.get(split, 0) + 1
        if p.converted:
            self.converted_images += 1
            self.converted.update(p.converted)

    def skip(self, key: str, reason: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        examples = self.samples.setdefault(reason, [])
        if len(examples) < 3:
            examples.append(f"{key}: {detail}" if detail else key)

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "resolution": self.resolution, "kept": self.kept,
                "converted_images": self.converted_images, "converted": dict(self.converted),
                "skipped": dict(self.skipped), "samples": self.samples, "sketches": self.sketches,
                "seconds": round(self.seconds, 2)}

    def format(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.kept.items())
        lines = [f"built {self.name} at {self.path} ({self.resolution}x{self.resolution}) in {self.seconds:.1f} s",
                 f"  kept      {self.total_kept} ({splits})"]
        lines.append(f"  converted {self.converted_images}" + "".join(
            f"\n    {n:6d}  {r}" for r, n in self.converted.most_common()))
        lines.append(f"  skipped   {sum(self.skipped.values())}" + "".join(
            f"\n    {n:6d}  {r}   e.g. {'; '.join(self.samples.get(r, []))}" for r, n in self.skipped.most_common()))
        if any(self.sketches.values()):
            lines.append(f"  sketches  {self.sketches['computed']} computed, {self.sketches['cached']} from cache")
        return "\n".join(lines)


def prepare_job(job: Job, spec: ImageSpec, sketch_cache: str | None, with_sketch: bool,
                sketch_size: int = ROUGH_SIZE) -> Prepared:
    """Worker entry point (top-level so spawn-started processes can import it). Sketches use work size
    `sketch_size` (datasets/sketch.py)."""
    if isinstance(job.source, (str, os.PathLike)):
        p = prepare_file(job.key, job.source, spec)
    else:
        p = prepare_image(job.key, job.source, spec)
    p.extra = dict(job.extra)
    if with_sketch and p.png is not None:
        cache = SketchCache(sketch_cache) if sketch_cache else None
        p.extra["sketch"], cached = sketch_png(p.png, cache, sketch_size)
        p.extra["_sketch_cached"] = cached
    return p


def _prepare_star(args: tuple) -> Prepared:
    return prepare_job(*args)


def prepare_all(jobs: list[Job], spec: ImageSpec, *, workers: int = 1, sketch_cache: str | None = None,
                with_sketch: bool = False, sketch_size: int = ROUGH_SIZE, desc: str = "",
                progress: bool = True) -> Iterator[Prepared]:
    """Prepared examples in the order of `jobs`, computed by `workers` processes, with a tqdm bar."""
    from tqdm import tqdm

    args = [(j, spec, sketch_cache, with_sketch, sketch_size) for j in jobs]
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, smoothing=0.1, dynamic_ncols=True)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for a in args:
                yield _prepare_star(a)
                bar.update(1)
            return
        # spawn, not fork: the parent may hold JAX / tfds threads, and forking those is unsafe.
        ctx = multiprocessing.get_context("spawn")
        chunk = 1 if with_sketch else max(1, min(64, len(jobs) // (workers * 8)))
        with ctx.Pool(workers) as pool:
            for p in pool.imap(_prepare_star, args, chunksize=chunk):     # ordered: keys stay deterministic
                yield p
                bar.update(1)
    finally:
        bar.close()


def _stale_temps(out: Path) -> Iterable[Path]:
    return out.parent.glob(f".{out.name}.incomplete-*")


def _fsync(p: str | os.PathLike) -> None:
    """fsync a file, or a folder's entries (renames into it). The same few lines as nets/images.py's fsync_dir:
    the floors keep datasets/ and nets/ from sharing code."""
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (tfds does not sync what it writes)."""
    for d, _, files in os.walk(root):
        for name in files:
            _fsync(os.path.join(d, name))
        _fsync(d)


def atomic_build(out: str | os.PathLike, make_builder, summary: BuildSummary, *, overwrite: bool = False) -> Path:
    """Build with `make_builder(data_dir)` into a temporary folder, then rename its dataset folder onto `out`.

    `make_builder` returns a tfds builder whose `download_and_prepare()` writes `<data_dir>/<name>/<version>`.
    The caller holds `datasets.lock.hold(out, ...)`: this sweeps `out`'s stale temporary folders.
    """
    import tensorflow_datasets as tfds

    out = Path(out).absolute()
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
        if not (out / "dataset_info.json").is_file():
            raise FileExistsError(f"{out} exists and is not a built dataset; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_temps(out):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.incomplete-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    try:
        builder = make_builder(tmp)
        summary.name = builder.name
        tfds.disable_progress_bar()         # our own bar counts images; tfds' would count them a second time
        builder.download_and_prepare()
        built = Path(builder.data_dir)
        summary.path = str(out)
        summary.seconds = time.perf_counter() - t0
        (built / SUMMARY_FILE).write_text(json.dumps(summary.to_json(), indent=1))
        _fsync_tree(built)
        if out.exists():                    # overwrite: move the old one aside first, so `out` is never partial
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
            os.rename(built, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(built, out)
        _fsync(out.parent)                  # the rename itself
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
