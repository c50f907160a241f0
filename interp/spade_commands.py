"""Subcommands `gafu spade ...`: painting roughs with a SPADE model file (interp/paint.py)."""
from __future__ import annotations

import argparse

from nets.flags import finite_float


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("spade", help="paint flat-colour roughs with a SPADE model",
                           description="Tools for SPADE (Park et al. 2019) model files, as in SPADE-AnimeFace.")
    spade_sub = group.add_subparsers(dest="spade_command", metavar="COMMAND", required=True)
    p = spade_sub.add_parser(
        "paint", help="paint a photo's rough (or a rough) with several seeds",
        description="Make the SPADE-AnimeFace rough of INPUT (centre square crop, resize to the model resolution, "
                    "the rough maker at the model's rough_size) and paint it once per seed; with --rough, INPUT "
                    "is already a rough at the model resolution. --style REF paints in the style of REF through "
                    "the model's VAE encoder (z = mu + psi * sigma * eps_seed; --psi 0 paints mu itself). Writes "
                    "OUT, one row: rough | paintings (| reference), cells upscaled to at least 128 px.")
    p.add_argument("input", help="photo or drawing (any size), or with --rough a rough at the model resolution")
    p.add_argument("--model", required=True, help="SPADE model file (its generator 'G', and 'E' for --style)")
    p.add_argument("--out", required=True, help="PNG to write (atomically)")
    p.add_argument("--seeds", default="0-7", help="one painting per seed, e.g. '0-7' or '1,5,9' (default 0-7)")
    p.add_argument("--style", metavar="REF", help="style image (any size; VAE models only)")
    p.add_argument("--rough", action="store_true", help="INPUT is already a rough: paint it as it is")
    p.add_argument("--psi", type=finite_float, default=1.0,
                   help="scale of the seeds' noise in z: the prior's, or around the style's mu (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_paint)


def _paint(args: argparse.Namespace) -> int:
    from datasets.sketch import rough_sketch
    from interp.paint import paint_files
    from nets.sampling import parse_seeds

    path, res = paint_files(args.input, args.model, args.out, parse_seeds(args.seeds),
                            make_rough=None if args.rough else rough_sketch, style=args.style, psi=args.psi,
                            overwrite=args.overwrite)
    cols = "rough | " + f"{len(res.seeds)} paintings" + (" | reference" if res.style is not None else "")
    print(f"wrote {path} ({cols})")
    return 0
