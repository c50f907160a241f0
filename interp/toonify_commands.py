"""Subcommands `gafu project` (photo -> W/W+ latent) and `gafu toonify` (photo -> latent -> blended model)."""
from __future__ import annotations

import argparse

from nets.flags import add_align_args, finite_float, use_align


def _projection_args(p: argparse.ArgumentParser, steps: int, space: str) -> None:
    g = p.add_argument_group("projection (NV projector.py schedule)")
    g.add_argument("--steps", type=int, default=steps, help=f"optimisation steps (default {steps})")
    g.add_argument("--space", choices=["w", "w+"], default=space,
                   help=f"one w shared by all layers, or one per layer (default {space})")
    g.add_argument("--lr", type=finite_float, default=0.1, help="peak Adam learning rate (default 0.1)")
    g.add_argument("--noise-reg", type=finite_float, default=1e5, help="noise-map regularisation weight (default 1e5)")
    g.add_argument("--fixed-noise", action="store_true",
                   help="keep the model's own noise maps instead of optimising re-initialised ones")
    g.add_argument("--seed", type=int, default=0, help="noise-map init and latent-noise seed (default 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "project", help="find the W / W+ latent of a photo in a StyleGAN2 generator",
        description="Crop the face of PHOTO as FFHQ's were (--align, the default with the align extra; else the "
                    "centre square) at the generator's resolution and optimise a latent (and the noise maps) so "
                    "the generator renders it: LPIPS-VGG + noise regularisation, Adam with NV's lr and "
                    "latent-noise ramps. Writes OUT_DIR/projected_w.npz ('w' [1,num_ws,w_dim]) and "
                    "OUT_DIR/proj.png (target | projection).")
    p.add_argument("photo", help="image file (any size)")
    p.add_argument("--model", required=True, help="model file holding the generator 'G'")
    p.add_argument("--out-dir", default="out/project", help="folder for the outputs (default out/project)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_align_args(p)
    _projection_args(p, 1000, "w")
    p.set_defaults(func=_project)

    p = sub.add_parser(
        "toonify", help="project a photo with the base model and render it through a blended model",
        description="Toonify yourself: project PHOTO into W+ of the BASE generator, then render that latent "
                    "through the blended generator (its own const noise maps). The blended model is --blended "
                    "CKPT, or BASE blended on the fly with --transfer CKPT (Pinkney's blend_models.py: BASE keeps "
                    "the blocks up to --resolution). Writes OUT (target | projection | toon) and the latent. "
                    "The face is cropped as FFHQ's were (--align, the default with the align extra; else the "
                    "centre square).")
    p.add_argument("photo", help="image file (any size)")
    p.add_argument("--base", required=True, help="model file of the base (photo) generator used to project")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--blended", help="model file of an already blended generator (gafu blend)")
    src.add_argument("--transfer", help="model file fine-tuned from BASE on the target domain, blended on the fly")
    p.add_argument("--resolution", type=int, help="with --transfer: the last block resolution taken from BASE")
    p.add_argument("--level", type=int, default=0, choices=[0, 1], help="with --transfer: switch at conv 0 or 1")
    p.add_argument("--blend-width", type=finite_float, help="with --transfer: smooth switch width (layer positions)")
    p.add_argument("--out", default="out/toonify.png", help="PNG to write (default out/toonify.png)")
    lat = p.add_mutually_exclusive_group()
    lat.add_argument("--latent", help="reuse a projected latent .npz instead of projecting")
    lat.add_argument("--latent-out", help="where to save the projected latent (default: OUT's name + _w.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_align_args(p)
    _projection_args(p, 500, "w+")
    p.set_defaults(func=_toonify)


def _config(args: argparse.Namespace):
    from interp.project import ProjectConfig
    return ProjectConfig(steps=args.steps, w_plus=args.space == "w+", lr=args.lr, noise_reg=args.noise_reg,
                         optimize_noise=not args.fixed_noise)


def _project(args: argparse.Namespace) -> int:
    from interp.toonify import project_file

    npz, png, proj = project_file(args.photo, args.model, args.out_dir, _config(args), seed=args.seed,
                                  overwrite=args.overwrite, progress=not args.quiet,
                                  align=use_align(args, "project"), face=args.face, landmarks=args.landmarks)
    print(f"LPIPS {proj.lpips_start:.4f} (w_avg) -> {proj.lpips_final:.4f}")
    print(f"wrote {npz}\nwrote {png}")
    return 0


def _toonify(args: argparse.Namespace) -> int:
    from interp.toonify import toonify_files

    png, lat, res = toonify_files(args.photo, args.base, args.out, blended=args.blended, transfer=args.transfer,
                                  resolution=args.resolution, level=args.level, blend_width=args.blend_width,
                                  latent=args.latent, latent_out=args.latent_out, pc=_config(args),
                                  seed=args.seed, overwrite=args.overwrite, progress=not args.quiet,
                                  align=use_align(args, "toonify"), face=args.face, landmarks=args.landmarks)
    if res.projected is not None:
        print(f"LPIPS {res.projected.lpips_start:.4f} (w_avg) -> {res.projected.lpips_final:.4f}")
    if lat is not None:
        print(f"wrote {lat}")
    print(f"wrote {png}")
    return 0
