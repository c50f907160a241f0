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
