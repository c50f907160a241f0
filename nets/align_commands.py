"""Subcommand `gafu align`: a photo -> FFHQ-aligned face crops (nets/align.py)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "align", help="crop the faces of a photo as FFHQ's were (dlib landmarks; needs gafu[align])",
        description="Find the faces of PHOTO with dlib's frontal face detector and 68-point landmarks (offline: "
                    "pip install 'gafu[align]'), and crop one as NVlabs/ffhq-dataset built FFHQ: an oriented "
                    "square from the eyes and mouth, reflect-padded where it leaves the photo, resized to "
                    "--resolution. EXIF orientation is applied first. Writes OUT, or with --all-faces OUT_0.png, "
                    "OUT_1.png, ... (largest face first).")
    p.add_argument("photo", help="image file (JPEG, PNG, ...)")
    p.add_argument("--out", required=True, help="PNG to write (atomically); with --all-faces the stem of OUT_K.png")
    p.add_argument("--resolution", type=int, default=1024, help="side of the crop in pixels (default 1024, FFHQ's)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--face", type=int, metavar="K", help="face K of several, counted largest first (default 0)")
    which.add_argument("--all-faces", action="store_true", help="every face: OUT_0.png, OUT_1.png, ...")
    which.add_argument("--landmarks", metavar="FILE",
                       help="the face's points instead of detecting them: 68 (iBUG) or 5 (eye centres, nose tip, "
                            "mouth corners; image-left first) 'x y' rows, a .json list of [x, y] or an [N,2] .npy")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_align)


def _align(args: argparse.Namespace) -> int:
    from nets.align import align_file

    paths = align_file(args.photo, args.out, args.resolution, face=args.face, all_faces=args.all_faces,
                       landmarks=args.landmarks, overwrite=args.overwrite)
    for path in paths:
        print(f"wrote {path}")
    return 0
