"""Subcommands of nets/: `gafu sample` (and the checkpoint importers' `convert` / `export`)."""
from __future__ import annotations

import argparse

from nets.flags import finite_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="write a PNG grid of generator samples",
                       description="Sample a grid from a model file, or from a freshly initialised preset.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="model file (directory written by gafu) of any registered architecture")
    src.add_argument("--preset", default="tiny", help="fresh generator of this preset (default: tiny)")
    p.add_argument("--arch", default="stylegan2", help="architecture of --preset (default: stylegan2)")
    p.add_argument("--resolution", type=int, help="override the preset's resolution")
    p.add_argument("--seeds", default="0-15", help="seeds, e.g. '0-15' or '1,5,9' (default 0-15)")
    p.add_argument("--psi", type=finite_float, default=1.0, help="truncation psi (default 1)")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"])
    p.add_argument("--out", default="out/samples.png", help="PNG to write (default out/samples.png)")
    p.set_defaults(func=_sample)

    p = sub.add_parser("convert", help="import a rosinality / NVIDIA StyleGAN2 checkpoint as a model file",
                       description="Convert a rosinality/stylegan2-pytorch checkpoint (g_ema, latent_avg, d) or an "
                                   "NVlabs stylegan2-ada-pytorch state dict (G_ema, D) into a gafu model file. "
                                   "Reads .npz (nested keys joined by '/', e.g. 'g_ema/convs.0.conv.weight'; no torch "
                                   "needed) or, with `pip install 'gafu[torch]'`, .pt/.pth state dicts. NVIDIA "
                                   "network pickles (.pkl) must first be saved as state dicts with NVIDIA's code. "
                                   "The architecture is read off the tensor shapes.")
    p.add_argument("src", help="checkpoint: .npz, .pt, .pth or .ckpt")
    p.add_argument("--out", required=True, help="model file (directory) to write")
    p.add_argument("--format", default="auto", choices=["auto", "rosinality", "nvidia"],
                   help="key layout of the checkpoint (default: detected)")
    p.add_argument("--generator", metavar="GROUP",
                   help="group holding the generator: g_ema / g (rosinality), G_ema / G (nvidia), '' for a bare "
                        "state dict (default: the EMA one, else the raw one, else bare)")
    p.add_argument("--no-d", action="store_true", help="leave the discriminator out even if the file has one")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a StyleGAN2Config field that shapes cannot tell, checked against the field's "
                        "type (the grammar of `gafu train --set`), e.g. conv_clamp=256 for models trained with "
                        "stylegan2-ada-pytorch, mbstd_group_size=8; repeatable")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.set_defaults(func=_convert)

    p = sub.add_parser("export", help="export a model file as a rosinality (or NVIDIA) style state dict .npz",
                       description="Write a StyleGAN2 model file as a flat .npz state dict with PyTorch key names "
                                   "and layouts (groups joined by '/': rosinality 'g_ema/...', 'd/...', "
                                   "'latent_avg'; nvidia 'G_ema/...', 'D/...'), ready for load_state_dict.")
    p.add_argument("model", help="model file (directory written by gafu)")
    p.add_argument("--out", required=True, help=".npz to write")
    p.add_argument("--format", default="rosinality", choices=["rosinality", "nvidia"])
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=_export)


def _sample(args: argparse.Namespace) -> int:
    from nets import images, sampling

    images.check_output(args.out)           # before compiling (sampling.sample_grid writes only at the end)
    path = sampling.sample_grid(model=args.model, preset_name=args.preset, resolution=args.resolution,
                                seeds=sampling.parse_seeds(args.seeds), psi=args.psi, noise_mode=args.noise_mode,
                                out=args.out, arch=args.arch)
    print(f"wrote {path}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from nets import convert
    from nets.stylegan2 import param_count

    path, imp = convert.convert_file(args.src, args.out, fmt=args.format, overrides=args.set,
                                     g_group=args.generator, with_d=not args.no_d, overwrite=args.overwrite)
    c, m = imp.config, imp.meta
    n_g = param_count(imp.variables["G"]["params"])
    d = f" + D ({m['discriminator']})" if m["discriminator"] is not None else ", no D"
    print(f"wrote {path}: {m['format']} G ({m['generator']}){d}; {c.resolution} px, {c.mapping_layers} mapping "
          f"layers, channel_base {c.channel_base}, channel_max {c.channel_max}, {n_g:,} G params; "
          f"w_avg: {m['w_avg']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from nets import convert

    path, cfg = convert.export_file(args.model, args.out, fmt=args.format, overwrite=args.overwrite)
    note = ""
    if args.format == "rosinality":
        ctor = convert.ros_constructor(cfg)
        note = (f"; load with rosinality {ctor}" if ctor else
                "; note: these widths match no rosinality Generator(channel_multiplier=...), so only code that "
                "builds the layers from the tensor shapes can load it")
    print(f"wrote {path} ({args.format} layout){note}")
    return 0
