"""Subcommands on VGG features: `gafu stylize` (interp/stylize.py) and `gafu dfi` (interp/dfi.py).

Only argparse is imported at module level. Each handler builds its config from the flags and calls one function
of interp/feature_files.py; the DFI attribute file (LFW `lfw_attributes.txt`, CelebA `list_attr_celeba.txt`) is
read here with datasets.attributes, since interp/ does not import datasets/.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from nets.flags import finite, finite_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stylize", help="neural style transfer (Gatys / chainer-gogh) on VGG features",
                       description="Optimise an image with CONTENT's VGG features and the STYLEs' Gram matrices.")
    p.add_argument("content", help="content image")
    p.add_argument("styles", nargs="+", metavar="STYLE", help="style image(s)")
    p.add_argument("--preset", default="gatys", choices=["gatys", "chainer-gogh"],
                   help="gatys: relu4_2 content, relu1_1..relu5_1 styles, L-BFGS (default); chainer-gogh: "
                        "conv1_2..conv4_3, lam 0.005, Adam lr 4 in 0..255")
    p.add_argument("--style-weights", type=finite_float, nargs="+", help="blend weights, one per style (default equal)")
    p.add_argument("--optimizer", choices=["adam", "lbfgs"])
    p.add_argument("--linesearch", choices=["none", "zoom"],
                   help="L-BFGS line search: none = unit steps as neural-style (default), zoom = strong Wolfe")
    p.add_argument("--lr", type=finite_float, help="Adam step in 0..255 pixel units")
    p.add_argument("--steps", type=int, help="iterations (presets: gatys 1000, chainer-gogh 5000)")
    p.add_argument("--size", type=int, help="long side of the output in pixels (gatys 512, chainer-gogh 435)")
    p.add_argument("--style-scale", type=finite_float, help="style images' long side relative to --size (1)")
    p.add_argument("--content-weight", "--lam", type=finite_float, dest="content_weight",
                   help="content weight (chainer-gogh's --lam)")
    p.add_argument("--style-weight", type=finite_float)
    p.add_argument("--tv-weight", type=finite_float, help="total-variation weight (0..255 pixel units)")
    p.add_argument("--content-layers", help="e.g. 'relu4_2' or 'conv3_3:1,conv4_3:1'")
    p.add_argument("--style-layers", help="e.g. 'relu1_1,relu2_1:0.5'")
    p.add_argument("--init", choices=["noise", "content"])
    p.add_argument("--pooling", choices=["avg", "max"])
    p.add_argument("--preserve-color", action="store_true", help="luminance-only transfer, keep content's colours")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vgg19-weights", help="torchvision VGG-19 state dict (.npz export, or .pth with torch); "
                                           "default: the bundled ImageNet VGG-16")
    p.add_argument("--save-every", type=int, default=0, help="also write OUT_<step>.png every N iterations")
    p.add_argument("--out", default="out/stylized.png")
    p.set_defaults(func=_stylize)

    d = sub.add_parser("dfi", help="Deep Feature Interpolation: change a face attribute",
                       description="Edit IMAGE along the VGG-feature direction from its K nearest source "
                                   "neighbours (lacking the attributes) to its K nearest target neighbours.")
    d.add_argument("image", help="input face (aligned like the dataset's images)")
    d.add_argument("--attribute", action="append", required=True,
                   help="attribute to add, e.g. Smiling; '~Name' removes it; repeat for several")
    d.add_argument("--alpha", type=finite_float, nargs="+", help="strength(s), one output each (authors 0.4)")
    d.add_argument("--attributes-file", required=True, help="lfw_attributes.txt or list_attr_celeba.txt")
    d.add_argument("--images", required=True, help="folder of the dataset images (LFW: Name/Name_0001.jpg)")
    d.add_argument("--preset", default="authors", choices=["authors", "chainer-dfi"],
                   help="attribute-vector normalisation and loss as in the authors' code (default) or chainer-dfi")
    d.add_argument("--k", type=int, help="neighbours per set (100)")
    d.add_argument("--metric", choices=["euclidean", "hamming"], default="euclidean",
                   help="attribute distance for the neighbours (default euclidean, as chainer-dfi)")
    d.add_argument("--margin", type=finite_float, help="T needs value >= margin, S <= -margin (0.5)")
    d.add_argument("--max-candidates", type=int, default=2000,
                   help="when IMAGE is not in the attribute file, pixel-rank at most this many per set")
    d.add_argument("--size", type=int, default=200, help="working size (square, default 200)")
    d.add_argument("--crop", help="x0,y0,x1,y1 box cut from dataset images before resizing "
                                  "(default: LFW 40,20,210,190; CelebA 19,39,159,179)")
    d.add_argument("--steps", type=int, help="L-BFGS iterations for the first alpha (500)")
    d.add_argument("--tv-weight", type=finite_float)
    d.add_argument("--linesearch", choices=["none", "zoom"],
                   help="L-BFGS line search (authors: zoom, as scipy's L-BFGS-B; chainer-dfi: none)")
    d.add_argument("--residual", action="store_true",
                   help="subtract the drift of a plain (alpha 0) reconstruction (on in the chainer-dfi preset)")
    d.add_argument("--vgg19-weights", help="torchvision VGG-19 state dict (.npz or .pth); default bundled VGG-16")
    d.add_argument("--cache-dir", default=os.path.join("~", ".cache", "gafu", "dfi"),
                   help="where neighbour feature means are cached (default ~/.cache/gafu/dfi)")
    d.add_argument("--no-cache", action="store_true")
    d.add_argument("--batch", type=int, default=8)
    d.add_argument("--out", default="out/dfi.png", help="output PNG (several alphas: OUT_a<alpha>.png)")
    d.set_defaults(func=_dfi)


# ----------------------------------------------------------------------------------------------------------------
# stylize


def parse_layers(spec: str) -> tuple[tuple[str, float], ...]:
    """'relu4_2' or 'conv3_3:1,conv4_3:0.5' -> (('conv3_3', 1.0), ('conv4_3', 0.5))."""
    out = []
    for part in filter(None, (s.strip() for s in spec.split(","))):
        tap, _, w = part.partition(":")
        out.append((tap, finite(w, f"layer weight in {part!r} (TAP or TAP:WEIGHT):") if w else 1.0))
    if not out:
        raise ValueError(f"no layers in {spec!r}")
    return tuple(out)


def _stylize(args: argparse.Namespace) -> int:
    from interp import feature_files, stylize

    cfg = stylize.PRESETS[args.preset]
    over = {k: getattr(args, k) for k in ("optimizer", "lr", "steps", "size", "style_scale", "content_weight",
                                           "style_weight", "tv_weight", "init", "pooling", "linesearch")
            if getattr(args, k) is not None}
    if args.content_layers:
        over["content_layers"] = parse_layers(args.content_layers)
    if args.style_layers:
        over["style_layers"] = parse_layers(args.style_layers)
    cfg = cfg.replace(preserve_color=args.preserve_color or cfg.preserve_color, **over)
    out, res = feature_files.stylize_files(args.content, args.styles, args.out, cfg,
                                           vgg19_weights=args.vgg19_weights, style_weights=args.style_weights,
                                           seed=args.seed, save_every=args.save_every)
    parts = ", ".join(f"{k} {v:.4g}" for k, v in res.parts.items())
    print(f"wrote {out} ({res.image.shape[1]}x{res.image.shape[0]}; final loss {parts})")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# dfi


def read_attribute_file(path: str | Path):
    """LFW `lfw_attributes.txt` or CelebA `list_attr_celeba.txt` -> interp.feature_files.AttributeRows.

    files are paths relative to the image folder (LFW: Name_With_Underscores/Name_With_Underscores_0001.jpg);
    CelebA's booleans become +1/-1 like its file. The parsing itself is datasets/attributes.py's.
    """
    from datasets import attributes
    from interp.feature_files import AttributeRows

    kind, t = attributes.read_attribute_file(path)
    return AttributeRows(kind, list(t.names), list(t.files), t.values)


def parse_crop(spec: str) -> tuple[int, int, int, int]:
    """'40,20,210,190' -> (40, 20, 210, 190)."""
    try:
        crop = tuple(int(v) for v in spec.split(","))
    except ValueError:
        crop = ()
    if len(crop) != 4:
        raise ValueError(f"--crop {spec!r}: expected four integers x0,y0,x1,y1")
    return crop


def _dfi(args: argparse.Namespace) -> int:
    from interp import dfi, feature_files

    over = {k: getattr(args, k) for k in ("k", "steps", "tv_weight", "margin", "linesearch")
            if getattr(args, k) is not None}
    cfg = dfi.PRESETS[args.preset].replace(**over, **({"residual": True} if args.residual else {}),
                                           **({"alphas": tuple(args.alpha)} if args.alpha else {}))
    outs = feature_files.dfi_files(
        args.image, read_attribute_file(args.attributes_file), args.images, args.out, cfg,
        attributes=args.attribute, metric=args.metric, crop=parse_crop(args.crop) if args.crop else None,
        size=args.size, max_candidates=args.max_candidates, vgg19_weights=args.vgg19_weights,
        cache_dir=None if args.no_cache else args.cache_dir, batch=args.batch, log=print)
    for path in outs:
        print(f"wrote {path}")
    return 0
