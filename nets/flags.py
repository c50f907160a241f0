"""Value types of command-line flags shared by the command modules (imported at their module level: stdlib only).

NaN and inf are refused where a number is parsed, so `gafu blend --alpha nan` stops at parse time with one line
naming the flag instead of writing an all-NaN model.
"""
from __future__ import annotations

import argparse
import math


def finite(text: str, what: str = "") -> float:
    """float(text), or a ValueError "<what> must be a (finite) number; got '...'"."""
    try:
        x = float(text)
    except ValueError:
        x = None
    if x is None or not math.isfinite(x):
        raise ValueError(f"{what} must be a {'finite ' if x is not None else ''}number; got {text.strip()!r}".strip())
    return x


def finite_float(text: str) -> float:
    """argparse `type=` for float flags; argparse names the flag ("argument --alpha: must be a finite ...")."""
    try:
        return finite(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_align_args(p: argparse.ArgumentParser) -> None:
    """--align/--no-align, --face K and --landmarks FILE for commands that read a face photo (see `use_align`)."""
    g = p.add_argument_group("face alignment (FFHQ crop from dlib landmarks; pip install 'gafu[align]')")
    g.add_argument("--align", action=argparse.BooleanOptionalAction, default=None,
                   help="crop the face as FFHQ was (eyes level, at FFHQ's place) instead of the centre square; "
                        "default: on when the align extra is installed. --no-align for crops made already")
    g.add_argument("--face", type=int, metavar="K", help="align face K of several, counted largest first (default 0)")
    g.add_argument("--landmarks", metavar="FILE",
                   help="the face's points instead of detecting them: 68 (iBUG) or 5 (eye centres, nose tip, "
                        "mouth corners; image-left first) 'x y' rows, a .json list of [x, y] or an [N,2] .npy")


def use_align(args: argparse.Namespace, command: str) -> bool:
    """Whether to align (the flags of `add_align_args`): asked for (--align, --face, --landmarks) -> True,
    --no-align -> False, else whether the extra is installed; without it a one-line note goes to stderr."""
    import sys

    if args.align is False:
        if args.face is not None or args.landmarks is not None:
            raise ValueError("--face and --landmarks choose the face to align; they do not go with --no-align")
        return False
    if args.align or args.face is not None or args.landmarks is not None:
        return True
    from nets import align
    if align.available():
        return True
    print(f"gafu {command}: note: no face alignment (pip install 'gafu[align]' adds it); the photo is centre-"
          f"cropped, so faces should be FFHQ-style aligned crops", file=sys.stderr)
    return False
