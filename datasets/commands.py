"""Subcommands of datasets/: `gafu prepare-data` (builds any dataset kind into an array_record folder)."""
from __future__ import annotations

import argparse

from nets.flags import finite_float

KINDS = ("folder", "paired", "celeba", "lfw", "demo")     # = datasets.builders.KINDS (not imported: keep --help fast)
SKETCH_SIZE = 256                                         # = datasets.sketch.ROUGH_SIZE (same reason)

_EPILOG = """kinds:
  folder  SRC = a folder of aligned images (searched recursively); split 'train'.
          --sketch adds SPADE-AnimeFace rough sketches (OpenCV, ~2-4 s per image per worker at the reference
          work size 256, cached); --sketch-size 64 is ~100x cheaper, for tiny demo models.
  paired  SRC = a folder with trainA/ trainB/ testA/ testB/ (selfie2anime layout); splits named alike.
  celeba  SRC = a folder with list_attr_celeba.txt and img_align_celeba/ (+ list_eval_partition.txt).
  lfw     SRC = a folder with lfw_attributes.txt and the LFW person folders (or lfw/ / lfw-deepfunneled/).
  demo    no SRC: the embedded demo (bundled LFW-subset faces and their cartoon renderings), default 32 px.

examples:
  gafu prepare-data folder ~/ffhq --out data/ffhq256 --resolution 256 --workers 2
  gafu prepare-data folder ~/toons --out data/toon64 --resolution 64 --sketch --sketch-size 64
  gafu prepare-data demo --out data/demo32
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare-data", help="build a training dataset (tfds array_record, no TensorFlow)",
                       description="Build a dataset into a folder that the training pipeline reads.\n"
                                   "The build is written to a temporary folder and renamed when complete;\n"
                                   "a summary says how many images were kept, converted and skipped, and why.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS, help="dataset kind (see below)")
    p.add_argument("src", nargs="?", help="source folder (all kinds but demo)")
    p.add_argument("--out", required=True, help="folder to create (the built dataset)")
    p.add_argument("--resolution", type=int, help="output side in pixels, a power of two (default 256; demo 32)")
    p.add_argument("--workers", type=int, default=1, help="worker processes for decoding / sketches (default 1)")
    p.add_argument("--sketch", action="store_true", help="also store SPADE-AnimeFace rough sketches (folder kind)")
    p.add_argument("--sketch-size", type=int, metavar="N",
                   help="work size of the rough sketches in pixels (default 256, the SPADE-AnimeFace recipe); "
                        "small sizes are for tiny demo models; a model must be painted with roughs of the size "
                        "it was trained on (saved in the dataset metadata as sketch_size)")
    p.add_argument("--sketch-cache", help="keep computed sketches here (default: a temporary folder beside --out)")
    p.add_argument("--min-size", type=int, help="skip images whose shorter side is below this (default res/2)")
    p.add_argument("--max-aspect", type=finite_float, default=2.0,
                   help="skip images with a longer/shorter side ratio above this (default 2)")
    p.add_argument("--crop-fraction", type=finite_float, default=1.0,
                   help="keep this centred fraction of the square crop, e.g. 0.5 for LFW's 250 px frames")
    p.add_argument("--variants", type=int, default=8, help="demo: framings per bundled face (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing built dataset at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from datasets.builders import prepare_dataset

    if args.kind == "demo" and args.src:
        raise ValueError("the demo dataset takes no source folder (it is built from bundled images)")
    if args.sketch and args.kind != "folder":
        raise ValueError("--sketch is available for the 'folder' kind (SPADE-AnimeFace training images)")
    if args.sketch_size is not None and not args.sketch:
        raise ValueError("--sketch-size sets the work size of --sketch rough sketches; add --sketch")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1; got {args.workers}")
    # `is None`, not `or`: --resolution 0 is refused by the build (ImageSpec), not taken as the default
    resolution = args.resolution if args.resolution is not None else 32 if args.kind == "demo" else 256
    sketch_size = args.sketch_size if args.sketch_size is not None else SKETCH_SIZE
    summary = prepare_dataset(args.kind, args.out, src=args.src, resolution=resolution, workers=args.workers,
                              sketch=args.sketch, sketch_cache=args.sketch_cache, sketch_size=sketch_size,
                              min_size=args.min_size, max_aspect=args.max_aspect, crop_fraction=args.crop_fraction,
                              variants=args.variants, overwrite=args.overwrite, progress=not args.quiet)
    print(summary.format())
    return 0
