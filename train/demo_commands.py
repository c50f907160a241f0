"""`gafu demo`: the README's main job (train/demo.py), Toonify end to end on the embedded data."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, fine-tune, blend and toonify on the embedded data (a few minutes)",
                       description="Train a tiny StyleGAN2 on real faces (domain A), fine-tune it on their cartoon "
                                   "renderings (domain B), write the layer-swap grid at every resolution, project a "
                                   "held-out photo into A's W+ and render it through the blend; out/report.md "
                                   "describes every image.")
    p.add_argument("method", nargs="?", choices=["toonify", "spade", "gnr"], default="toonify",
                   help="toonify (default): the StyleGAN2 story above; spade: train a tiny SPADE on roughs of the "
                        "bundled cartoon faces, paint held-out roughs and a photo's, fine-tune on a second look and "
                        "blend the two by resolution; gnr: train a tiny GANs N' Roses from the grey faces to the same "
                        "faces in 8 looks, translate a held-out face under 8 styles, 8 faces under one style, and a "
                        "short clip frame by frame")
    p.add_argument("--out", help="output folder (default out/demo, out/demo_spade or out/demo_gnr)")
    p.add_argument("--steps-a", type=int, help="training steps on domain A (gnr: training steps; default: the "
                   "demo's, see README)")
    p.add_argument("--steps-b", type=int, help="fine-tuning steps on domain B (default: the demo's)")
    p.add_argument("--project-steps", type=int, help="W+ projection steps (default: the demo's)")
    p.add_argument("--swap", type=int, default=16, help="first block resolution taken from B for the toon "
                   "(default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder's results")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.method == "gnr":
        from train.gnr_demo import run_gnr_demo

        steps = {} if args.steps_a is None else {"steps": args.steps_a}
        print(f"wrote {run_gnr_demo(args.out or 'out/demo_gnr', seed=args.seed, overwrite=args.overwrite, **steps)}")
        return 0
    if args.method == "spade":
        from train.spade_demo import run_spade_demo

        steps = {k: v for k, v in dict(steps_a=args.steps_a, steps_b=args.steps_b).items() if v is not None}
        report = run_spade_demo(args.out or "out/demo_spade", seed=args.seed, overwrite=args.overwrite, **steps)
        print(f"wrote {report}")
        return 0
    from train.demo import run_demo

    args.out = args.out or "out/demo"
    given = {k: v for k, v in dict(steps_a=args.steps_a, steps_b=args.steps_b,
                                   project_steps=args.project_steps).items() if v is not None}
    report = run_demo(args.out, swap=args.swap, seed=args.seed, overwrite=args.overwrite, **given)
    print(f"wrote {report}")
    return 0
