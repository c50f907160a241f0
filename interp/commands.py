"""Subcommands of interp/: `gafu blend` (layer swapping and blending of two model files of one architecture)."""
from __future__ import annotations

import argparse

from nets.flags import finite, finite_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "blend", help="blend two model files by resolution (Toonify layer swapping)",
        description="Blend the generators of LOW and HIGH (one fine-tuned from the other) into a new model file. "
                    "LOW gives the low-resolution blocks (structure), HIGH the high-resolution ones (texture).")
    p.add_argument("low", help="model file giving the low resolutions, the mapping network and w_avg")
    p.add_argument("high", help="model file giving the high resolutions")
    p.add_argument("--out", required=True, help="model file to write (atomically)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--toonify", type=int, metavar="R",
                      help="Pinkney's blend_models.py: LOW keeps blocks up to R whole (hard switch, level 0)")
    mode.add_argument("--swap", type=int, metavar="R", help="clean mode: blocks R and up come from HIGH")
    mode.add_argument("--alpha", type=finite_float,
                      help="plain interpolation (ESRGAN): share of HIGH in every layer")
    mode.add_argument("--schedule", metavar="R=A,...", help="share of HIGH per resolution, e.g. 4=0,8=0,16=0.5,32=1")
    p.add_argument("--level", type=int, default=0, choices=[0, 1], help="--toonify: switch at conv 0 or 1")
    p.add_argument("--blend-width", type=finite_float,
                   help="smooth logistic switch: width in layer positions (--toonify) or blocks (--swap)")
    p.add_argument("--figure", help="also write a PNG: rows LOW, the blend at every R (high to low), HIGH")
    p.add_argument("--seeds", default="0-5", help="figure columns, e.g. '0-5' or '1,5,9' (default 0-5)")
    p.add_argument("--psi", type=finite_float, default=1.0, help="figure truncation psi (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace --out / --figure if they exist")
    p.set_defaults(func=_blend)


def parse_schedule(spec: str) -> dict[int, float]:
    """'4=0,8=0.5' -> {4: 0.0, 8: 0.5}; NaN / inf shares are refused."""
    out: dict[int, float] = {}
    for part in filter(None, (s.strip() for s in spec.split(","))):
        res, sep, alpha = part.partition("=")
        if not sep or not res.strip().isdigit():
            raise ValueError(f"--schedule entry {part!r} is not R=ALPHA (e.g. 16=0.5)")
        out[int(res)] = finite(alpha, f"--schedule entry {part!r}: the share")
    if not out:
        raise ValueError(f"--schedule {spec!r} has no entries")
    return out


def _blend(args: argparse.Namespace) -> int:
    from interp.blend_files import BlendSpec, blend_files
    from nets.sampling import parse_seeds

    mode = next(m for m in ("toonify", "swap", "alpha", "schedule") if getattr(args, m) is not None)
    spec = BlendSpec(mode={"alpha": "lerp"}.get(mode, mode), resolution=args.toonify or args.swap,
                     level=args.level, blend_width=args.blend_width, alpha=args.alpha,
                     schedule=parse_schedule(args.schedule) if args.schedule else None)
    res = blend_files(args.low, args.high, args.out, spec, figure=args.figure, seeds=tuple(parse_seeds(args.seeds)),
                      psi=args.psi, overwrite=args.overwrite)
    print(f"wrote {res.model}")
    if res.figure:
        print(f"wrote {res.figure} (rows: {', '.join(res.figure_rows)})")
    return 0
