"""Subcommands `gafu gnr ...`: one face -> many styles with a GANs N' Roses model file (interp/gnr.py)."""
from __future__ import annotations

import argparse

from nets.flags import add_align_args, finite_float, use_align


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("gnr", help="translate faces (and videos) with a GANs N' Roses model",
                           description="Tools for GANs N' Roses (Chong & Forsyth 2021) model files.")
    gnr_sub = group.add_subparsers(dest="gnr_command", metavar="COMMAND", required=True)
    p = gnr_sub.add_parser(
        "translate", help="one face under several sampled styles (or a reference's style)",
        description="Crop the face of IMAGE at the model resolution (FFHQ's crop with --align, the default with "
                    "the align extra; else the centre square), encode its content and decode it under "
                    "--styles prior style codes (seeds --seed, --seed+1, ...) or under the style encoded from "
                    "--style-from REF (a toon image, read by the model's B->A encoder). Writes OUT, one row: "
                    "face | outputs (| reference), cells upscaled to at least 128 px.")
    p.add_argument("image", help="a face photo (any size)")
    p.add_argument("--model", required=True, help="GNR model file")
    p.add_argument("--out", required=True, help="PNG to write (atomically)")
    p.add_argument("--styles", type=int, default=8, help="number of sampled styles (default 8)")
    p.add_argument("--seed", type=int, default=0, help="first style seed (default 0)")
    p.add_argument("--style-from", metavar="REF", help="use the style of this toon image instead of sampled ones")
    p.add_argument("--psi", type=finite_float, default=1.0, help="scale of the sampled codes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_align_args(p)
    p.set_defaults(func=_translate)

    v = gnr_sub.add_parser(
        "video", help="translate a video frame by frame",
        description="Translate every frame of IN (centre square crop, resized to the model resolution) and write "
                    "OUT at IN's frame rate (H.264). --styles 1 writes the translation; 4 a row with the input in "
                    "the middle; 8 a 3x3 grid with the input in the centre. --mode fixed keeps one set of codes "
                    "(seeds --style-seed ...); drift moves them along a smoothed random walk. Needs the video "
                    "extra: pip install 'gafu[video]'.")
    v.add_argument("input", help="input video (anything ffmpeg reads)")
    v.add_argument("output", help="output video (.mp4, .m4v, .mov or .mkv; written atomically)")
    v.add_argument("--model", required=True, help="GNR model file")
    v.add_argument("--styles", type=int, choices=(1, 4, 8), default=1)
    v.add_argument("--style-seed", type=int, default=0)
    v.add_argument("--mode", choices=("fixed", "drift"), default="fixed")
    v.add_argument("--batch", type=int, default=8, help="frames per model call (default 8)")
    v.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    v.set_defaults(func=_video)


def _translate(args: argparse.Namespace) -> int:
    from interp.gnr import translate_files

    path, res = translate_files(args.image, args.model, args.out, num_styles=args.styles, seed=args.seed,
                                style_from=args.style_from, psi=args.psi, overwrite=args.overwrite,
                                align=use_align(args, "gnr translate"), face=args.face, landmarks=args.landmarks)
    what = "the reference's style" if res.reference is not None else f"{len(res.outputs)} sampled styles"
    print(f"wrote {path} (face | {what})")
    return 0


def _video(args: argparse.Namespace) -> int:
    from interp.gnr import video_files

    res = video_files(args.input, args.output, args.model, num_styles=args.styles, style_seed=args.style_seed,
                      mode=args.mode, batch=args.batch, overwrite=args.overwrite)
    print(f"wrote {res.path}: {res.frames} frames {res.width}x{res.height} at {res.fps:g} fps "
          f"({res.frames_per_second:.1f} frames/s)")
    return 0
