"""Subcommand `gafu serve`: a local web page with a tab per method (interp/web.py; needs `pip install 'gafu[web]'`)."""
from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="a local web page: Toonify, style transfer, DFI, SPADE paint, GANs N' Roses",
        description="Serve one page on this machine (no network access, no share link) with a tab per method, "
                    "running on the model files given; by default the demos' folders (gafu demo -> out/demo, "
                    "gafu demo spade -> out/demo_spade, gafu demo gnr -> out/demo_gnr). A tab whose model is "
                    "missing says which file and how to make it. One model run at a time; other requests queue. "
                    "Needs the web extra: pip install 'gafu[web]'.")
    g = p.add_argument_group("models")
    g.add_argument("--demo", default="out/demo",
                   help="a gafu demo folder: Toonify projects with DEMO/train_A/ema and renders with its swap blend "
                        "with DEMO/train_B/ema (default out/demo)")
    g.add_argument("--toonify-base", help="photo model file (StyleGAN2), instead of --demo's train_A")
    g.add_argument("--toonify-transfer", help="toon model file fine-tuned from --toonify-base")
    g.add_argument("--spade", default=os.path.join("out", "demo_spade", "train_B", "ema"),
                   help="SPADE model file for the paint tab (default out/demo_spade/train_B/ema)")
    g.add_argument("--gnr", default=os.path.join("out", "demo_gnr", "train", "ema"),
                   help="GANs N' Roses model file (default out/demo_gnr/train/ema)")
    g.add_argument("--dfi-attributes", help="lfw_attributes.txt or list_attr_celeba.txt: turns the DFI tab on")
    g.add_argument("--dfi-images", help="the folder of the attribute file's images (LFW: lfw-deepfunneled/)")
    g.add_argument("--dfi-size", type=int, default=200, help="DFI working size (square, default 200)")
    g.add_argument("--noise", choices=("auto", "on", "off"), default="auto",
                   help="the StyleGAN2 models' per-pixel noise inputs at first (a checkbox in the page): auto = "
                        "off for --demo models, as gafu demo draws them, on for --toonify-base/--transfer")
    g.add_argument("--project-steps", type=int, default=200, help="the page's first projection steps (default 200)")
    g.add_argument("--max-side", type=int, default=1024,
                   help="uploads are shrunk to this long side before anything else (default 1024)")
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.set_defaults(func=_serve)


def _spec(args: argparse.Namespace):
    from pathlib import Path

    from datasets.sketch import rough_sketch
    from interp import web_tabs
    from interp.web import WebSpec

    if (args.toonify_base is None) != (args.toonify_transfer is None):
        raise ValueError("give both --toonify-base and --toonify-transfer (or neither, for --demo's models)")
    if (args.dfi_attributes is None) != (args.dfi_images is None):
        raise ValueError("the DFI tab needs both --dfi-attributes FILE and --dfi-images DIR")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1 .. 65535; got {args.port}")
    if not 64 <= args.max_side <= 8192:
        raise ValueError(f"--max-side must be in 64 .. 8192; got {args.max_side}")
    if not 10 <= args.project_steps <= 1000 or args.project_steps % 10:
        raise ValueError(f"--project-steps must be a multiple of 10 in 10 .. 1000 (the page's slider); got "
                         f"{args.project_steps}")
    if not 32 <= args.dfi_size <= 1024:
        raise ValueError(f"--dfi-size must be in 32 .. 1024; got {args.dfi_size}")
    explicit = args.toonify_base is not None
    base, transfer = ((Path(args.toonify_base), Path(args.toonify_transfer)) if explicit else
                      (Path(args.demo) / "train_A" / "ema", Path(args.demo) / "train_B" / "ema"))
    dfi = None
    if args.dfi_attributes:
        images = Path(args.dfi_images)
        if not images.is_dir():
            raise FileNotFoundError(f"--dfi-images {images} is not a folder")
        dfi = web_tabs.DFIData(read_attributes(args.dfi_attributes), images, args.dfi_size)
    noise = {"on": True, "off": False, "auto": explicit}[args.noise]
    return WebSpec(toonify_base=base, toonify_transfer=transfer, spade=Path(args.spade), gnr=Path(args.gnr),
                   dfi=dfi, make_rough=rough_sketch, project_steps=args.project_steps, noise=noise,
                   max_side=args.max_side)


def read_attributes(path: str):
    """LFW's or CelebA's attribute file -> interp.feature_files.AttributeRows (as `gafu dfi` reads it, in
    interp/feature_commands.py; the reading is datasets/attributes.py's)."""
    from datasets import attributes
    from interp.feature_files import AttributeRows

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--dfi-attributes {path} does not exist")
    kind, t = attributes.read_attribute_file(path)
    return AttributeRows(kind, list(t.names), list(t.files), t.values)


def _serve(args: argparse.Namespace) -> int:
    import sys

    spec = _spec(args)
    try:
        from interp import web
    except ModuleNotFoundError as e:
        if e.name != "gradio":
            raise
        raise ValueError("gafu serve needs gradio: pip install 'gafu[web]'") from None
    loaded = web.load(spec)
    for tab, m in (("Toonify", loaded.toonify), ("Style transfer", loaded.vgg), ("DFI", loaded.dfi),
                   ("SPADE paint", loaded.painter), ("GANs N' Roses", loaded.translator)):
        if isinstance(m, web.W.Missing):
            print(f"gafu serve: the {tab} tab is off: {m.message}", file=sys.stderr)
    app = web.build_app(spec, loaded)
    url = web.launch(app, args.host, args.port, block=False, quiet=True)
    print(f"gafu serve: serving {url} (Ctrl-C stops it)", flush=True)
    app.block_thread()
    return 0
