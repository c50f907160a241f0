"""tfds builders (array_record files, no TensorFlow needed) for every dataset gafu trains on.

Each kind first makes a `Plan` (pure Python: which files go to which split, with which extra features), then one
`GeneratorBasedBuilder` subclass per kind writes it. Images are fed to tfds as PNG bytes: tfds encodes a numpy array
with `tf.image.encode_png`, i.e. only with TensorFlow, but takes encoded bytes as they are. Read a build back with
`datasets.pipeline.open_source(path, split)`.

Kinds (`prepare_dataset(kind, ...)`, `gafu prepare-data KIND`):
  folder  aligned single-domain images (FFHQ, anime faces, ukiyo-e, cartoon faces), recursively; split 'train'.
          Optional SPADE-AnimeFace rough sketches stored next to each image as feature 'sketch', computed at
          work size `sketch_size` (metadata 'sketch_size'; 256 = the reference, smaller for tiny demo models).
  paired  translation data in the selfie2anime layout: subfolders trainA/trainB/testA/testB become those splits.
  celeba  CelebA aligned images + the 40 attributes of list_attr_celeba.txt (+ list_eval_partition.txt splits).
  lfw     LFW images + the 73 attributes of lfw_attributes.txt (split 'train').
  demo    the embedded demo domains (datasets/demo.py): trainA photos, trainB toons, testA/testB held-out photo.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from datasets import attributes as attr
from datasets.build import BuildSummary, Job, atomic_build, prepare_all
from datasets.imageio import ImageSpec, list_images
from datasets.lock import hold
from datasets.sketch import ROUGH_SIZE, check_work_size

PAIRED_SPLITS = ("trainA", "trainB", "testA", "testB")
KINDS = ("folder", "paired", "celeba", "lfw", "demo")


@dataclasses.dataclass
class Plan:
    splits: dict[str, list[Job]]
    features: dict[str, Any] = dataclasses.field(default_factory=dict)     # extra tfds features per example
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    planning_skips: list[tuple[str, str]] = dataclasses.field(default_factory=list)   # (key, reason)


def plan_folder(src: str | Path) -> Plan:
    return Plan({"train": [Job(k, p) for k, p in list_images(src)]}, metadata={"source": str(src)})


def plan_paired(src: str | Path) -> Plan:
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"paired dataset folder {src} does not exist")
    present = [s for s in PAIRED_SPLITS if (src / s).is_dir()]
    if not present:
        raise ValueError(f"{src} has none of the subfolders {', '.join(PAIRED_SPLITS)} (selfie2anime layout)")
    splits = {s: [Job(f"{s}/{k}", p) for k, p in list_images(src / s)] for s in present}
    return Plan(splits, metadata={"source": str(src), "domains": {"A": "trainA/testA", "B": "trainB/testB"}})


def _find(src: Path, names: list[str], what: str) -> Path:
    for n in names:
        if (src / n).exists():
            return src / n
    raise FileNotFoundError(f"{what} not found in {src} (looked for {', '.join(names)})")


def plan_celeba(src: str | Path) -> Plan:
    """`src` holds list_attr_celeba.txt (or Anno/...) and img_align_celeba/ (also the Kaggle nesting)."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"CelebA folder {src} does not exist")
    table = attr.read_celeba_attributes(_find(src, ["list_attr_celeba.txt", "Anno/list_attr_celeba.txt"],
                                              "list_attr_celeba.txt"))
    images = _find(src, ["img_align_celeba/img_align_celeba", "img_align_celeba"], "image folder img_align_celeba")
    try:
        part = attr.read_celeba_partition(_find(src, ["list_eval_partition.txt", "Eval/list_eval_partition.txt"],
                                                "list_eval_partition.txt"))
    except FileNotFoundError:
        part = {}                                   # no partition file: everything is 'train'
    splits: dict[str, list[Job]] = {}
    skips = []
    for f, row in zip(table.files, table.values):
        path = images / f
        if not path.is_file():
            skips.append((f, "listed in the attribute file but the image is missing"))
            continue
        splits.setdefault(part.get(f, "train"), []).append(Job(f, path, {"attributes": row}))
    return Plan(splits, features={"attributes": tfds.features.Tensor(shape=(len(table.names),), dtype=np.bool_)},
                metadata={"source": str(src), "attribute_names": list(table.names)}, planning_skips=skips)


def plan_lfw(src: str | Path) -> Plan:
    """`src` holds lfw_attributes.txt and the image folders (<src>/lfw/, lfw-deepfunneled/, or <src>/<Name>/)."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"LFW folder {src} does not exist")
    table = attr.read_lfw_attributes(_find(src, ["lfw_attributes.txt"], "lfw_attributes.txt"))
    roots = [src / d for d in ("lfw-deepfunneled", "lfw_funneled", "lfw") if (src / d).is_dir()] + [src]
    jobs, skips = [], []
    for f, row in zip(table.files, table.values):
        path = next((r / f for r in roots if (r / f).is_file()), None)
        if path is None:
            skips.append((f, "listed in the attribute file but the image is missing"))
            continue
        person, num = f.split("/")[0].replace("_", " "), int(Path(f).stem.rsplit("_", 1)[1])
        jobs.append(Job(f, path, {"attributes": row, "person": person, "imagenum": np.int32(num)}))
    feats = {"attributes": tfds.features.Tensor(shape=(len(table.names),), dtype=np.float32),
             "person": tfds.features.Text(), "imagenum": tfds.features.Scalar(dtype=np.int32)}
    return Plan({"train": jobs}, features=feats,
                metadata={"source": str(src), "attribute_names": list(table.names)}, planning_skips=skips)


def plan_demo(resolution: int, variants: int = 8) -> Plan:
    from datasets.demo import load_demo_domains, toonify_render

    a, b, photo = load_demo_domains(resolution, variants)
    splits = {"trainA": [Job(f"photo_{i:04d}", x) for i, x in enumerate(a)],
              "trainB": [Job(f"toon_{i:04d}", x) for i, x in enumerate(b)],
              "testA": [Job("astronaut", photo)],
              "testB": [Job("astronaut_toon", toonify_render(photo[None])[0])]}
    return Plan(splits, metadata={"source": "scikit-image lfw_subset + astronaut (bundled)", "variants": variants})


class _LocalInfo(tfds.core.DatasetInfo):
    """DatasetInfo of a dataset that exists nowhere else: a new builder does not look for published metadata.
    (tfds' lookup makes an empty `tmp*tfds` folder in the system temp dir on every build, and never removes it.)"""

    def initialize_from_bucket(self) -> None:
        pass


class _PlannedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes a Plan: features 'image' (PNG, [R,R,3]), 'filename', optional 'sketch', plus the plan's own."""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "gafu layout: PNG image + filename (+ sketch / attributes)."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        # These builders download nothing, so they have no checksums file next to their code. (tfds' own lookup
        # of that path needs the `importlib_resources` backport, absent on Python >= 3.9 installs.)
        return None

    # tfds prints "Downloading and preparing dataset ..." / "... downloaded and prepared to <temp dir>"; nothing is
    # downloaded and the temp dir is renamed afterwards, so the build summary reports instead.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def __init__(self, *, plan: Plan, spec: ImageSpec, summary: BuildSummary, workers: int = 1,
                 sketch: bool = False, sketch_cache: str | None = None, sketch_size: int = ROUGH_SIZE,
                 progress: bool = True, **kwargs):
        self._plan, self._spec, self._summary = plan, spec, summary
        self._workers, self._sketch, self._sketch_cache, self._progress = workers, sketch, sketch_cache, progress
        self._sketch_size = check_work_size(sketch_size)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        r = self._spec.resolution
        feats = {"image": tfds.features.Image(shape=(r, r, 3), encoding_format="png"),
                 "filename": tfds.features.Text()}
        if self._sketch:
            feats["sketch"] = tfds.features.Image(shape=(r, r, 3), encoding_format="png")
        feats.update(self._plan.features)
        meta = dict(self._plan.metadata, resolution=r, sketch=self._sketch)
        if self._sketch:
            meta["sketch_size"] = self._sketch_size     # a model must be painted with roughs of this work size
        return _LocalInfo(builder=self, description=(type(self).__doc__ or "").strip(),
                          features=tfds.features.FeaturesDict(feats),
                          metadata=tfds.core.MetadataDict(meta), disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in self._plan.splits}

    def _generate_examples(self, split: str):
        jobs = self._plan.splits[split]
        for p in prepare_all(jobs, self._spec, workers=self._workers, sketch_cache=self._sketch_cache,
                             with_sketch=self._sketch, sketch_size=self._sketch_size, desc=f"{self.name} {split}",
                             progress=self._progress):
            self._summary.add(split, p)
            if p.png is None:
                continue
            cached = p.extra.pop("_sketch_cached", None)
            if cached is not None:
                self._summary.sketches["cached" if cached else "computed"] += 1
            yield p.key, {"image": p.png, "filename": p.key, **p.extra}
        if not self._summary.kept.get(split):
            reasons = "; ".join(f"{n} {r}" for r, n in self._summary.skipped.most_common()) or "no files"
            raise ValueError(f"no usable images for split {split!r} ({len(jobs)} files: {reasons})")


class GafuFolder(_PlannedBuilder):
    """Aligned single-domain images from a folder, centre-cropped and resized to a power-of-two square."""


class GafuPaired(_PlannedBuilder):
    """Two-domain translation data in the selfie2anime layout (splits trainA, trainB, testA, testB)."""


class GafuCeleba(_PlannedBuilder):
    """CelebA aligned faces with the 40 binary attributes of list_attr_celeba.txt (names in metadata)."""


class GafuLfw(_PlannedBuilder):
    """LFW faces with the 73 real-valued attributes of lfw_attributes.txt (names in metadata)."""


class GafuDemo(_PlannedBuilder):
    """Embedded demo: LFW-subset face photos (A) and their deterministic cartoon renderings (B)."""


_BUILDERS = {"folder": GafuFolder, "paired": GafuPaired, "celeba": GafuCeleba, "lfw": GafuLfw, "demo": GafuDemo}


def make_plan(kind: str, src: str | Path | None, resolution: int, variants: int = 8) -> Plan:
    if kind not in _BUILDERS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose from {', '.join(KINDS)}")
    if kind == "demo":
        return plan_demo(resolution, variants)
    if src is None:
        raise ValueError(f"dataset kind {kind!r} needs a source folder")
    return {"folder": plan_folder, "paired": plan_paired, "celeba": plan_celeba, "lfw": plan_lfw}[kind](src)


def prepare_dataset(kind: str, out: str | Path, *, src: str | Path | None = None, resolution: int = 256,
                    workers: int = 1, sketch: bool = False, sketch_cache: str | Path | None = None,
                    sketch_size: int = ROUGH_SIZE, min_size: int | None = None, max_aspect: float = 2.0,
                    crop_fraction: float = 1.0, variants: int = 8, overwrite: bool = False, progress: bool = True) -> BuildSummary:
    """Build dataset `kind` from `src` into the folder `out` (atomically). Returns the build summary.

    Sketch results are cached under `sketch_cache` (default: a hidden folder beside `out`, removed after a
    successful build) so an interrupted sketch build resumes where it stopped. The build holds `.<out>.lock`
    (datasets/lock.py): a second build into `out` is refused at once with LockedError naming the first one.
    `sketch_size` is the rough sketches' work size (datasets/sketch.py), kept in the metadata as 'sketch_size'.
    """
    check_work_size(sketch_size)                    # before any lock or folder is made
    spec = ImageSpec(resolution, min_size=min_size, max_aspect=max_aspect, crop_fraction=crop_fraction)
    out = Path(out).absolute()
    with hold(out, "prepare-data"):
        plan = make_plan(kind, src, resolution, variants)
        summary = BuildSummary(resolution=resolution)
        for key, reason in plan.planning_skips:
            summary.skip(key, reason)
        own_cache = sketch and sketch_cache is None
        cache = Path(sketch_cache) if sketch_cache else out.parent / f".{out.name}.sketch-cache"
        cls = _BUILDERS[kind]
        atomic_build(out, lambda data_dir: cls(plan=plan, spec=spec, summary=summary, workers=workers,
                                               sketch=sketch, sketch_cache=str(cache) if sketch else None,
                                               sketch_size=sketch_size,
                                               progress=progress, data_dir=str(data_dir), file_format="array_record"),
                     summary, overwrite=overwrite)
        if own_cache:
            shutil.rmtree(cache, ignore_errors=True)
    return summary
