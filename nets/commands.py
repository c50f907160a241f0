"""Subcommands of nets/: `gafu sample` (and the checkpoint importers' `convert` / `export`)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="write a PNG grid of generator samples",
                       description="Sample a grid from a model file, or from a freshly initialised preset.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="model file (directory written by gafu) holding a generator 'G'")
    src.add_argument("--preset", default="tiny", help="fresh generator of this preset (default: tiny)")
    p.add_argument("--resolution", type=int, help="override the preset's resolution")
    p.add_argument("--seeds", default="0-15", help="seeds, e.g. '0-15' or '1,5,9' (default 0-15)")
    p.add_argument("--psi", type=float, default=1.0, help="truncation psi (default 1)")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"])
    p.add_argument("--out", default="out/samples.png", help="PNG to write (default out/samples.png)")
    p.set_defaults(func=_sample)


def parse_seeds(spec: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            seeds.extend(range(int(a), int(b) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"no seeds in {spec!r}")
    return seeds


def _sample(args: argparse.Namespace) -> int:
    from nets import sampling

    path = sampling.sample_grid(model=args.model, preset_name=args.preset, resolution=args.resolution,
                                seeds=parse_seeds(args.seeds), psi=args.psi, noise_mode=args.noise_mode,
                                out=args.out)
    print(f"wrote {path}")
    return 0
