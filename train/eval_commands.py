"""Subcommand `gafu eval`: FID, KID, precision/recall, PPL, LPIPS diversity and diversity FID of a model file
(train/eval/run.py), and the converters of the Inception and VGG-16 weight files."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="FID / KID / precision-recall / PPL / LPIPS diversity / diversity FID of a model file",
        description="Compute metrics of MODEL as NVlabs/stylegan2-ada-pytorch names them (fid50k_full, "
                    "kid50k_full, pr50k3_full, fid10k, kid1k, ppl2_wend, lpips_div100, dfid100x100, ...), print a "
                    "table and append one JSON line per metric to metric-<name>.jsonl next to MODEL. Translation "
                    "models (SPADE, GANs N' Roses) are judged on the --source-split's translations against the "
                    "--split's images. FID and KID need "
                    "pytorch-fid's Inception weights (--inception FILE, $GAFU_INCEPTION, or "
                    "~/.cache/gafu/weights/); precision/recall NVIDIA's metric vgg16.pt (--vgg16 FILE, $GAFU_VGG16, "
                    "or the same folder); nothing is downloaded. With --convert-inception X.pth --out Y.npz (or "
                    "--convert-vgg16 vgg16.pt --out vgg16.npz), convert those weights for use without torch.")
    p.add_argument("model", nargs="?", help="model file (a folder written by gafu train / convert)")
    p.add_argument("--data", help="dataset folder or tfds name holding the real images")
    p.add_argument("--metrics", default="fid50k_full", help="comma-separated metric names (default fid50k_full)")
    p.add_argument("--num", type=int, help="number of generated images (replaces the N of fid<N>k)")
    p.add_argument("--batch", type=int, default=64, help="images per generated / embedded batch (default 64)")
    p.add_argument("--split", help="the reals' split (default: train; spade test; gnr testB)")
    p.add_argument("--source-split", help="translation models: the sources' split (spade test, gnr testA)")
    p.add_argument("--inception", metavar="FILE", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth or "
                                                       "its converted .npz")
    p.add_argument("--any-inception", action="store_true",
                   help="accept Inception weights other than pytorch-fid's (FIDs not comparable with published)")
    p.add_argument("--vgg16", metavar="FILE", help="NVIDIA's metric vgg16.pt (precision/recall) or its .npz")
    p.add_argument("--any-vgg16", action="store_true",
                   help="accept VGG-16 weights other than NVIDIA's vgg16.pt (values not comparable with published)")
    p.add_argument("--convert-inception", metavar="PTH", help="convert pytorch-fid's .pth to --out (.npz)")
    p.add_argument("--convert-vgg16", metavar="PT", help="convert NVIDIA's vgg16.pt to --out (.npz)")
    p.add_argument("--out", help="with --convert-*: the .npz to write")
    p.add_argument("--overwrite", action="store_true", help="with --convert-*: replace --out")
    p.add_argument("--no-jsonl", action="store_true", help="print only; append nothing next to MODEL")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_eval)


def _convert(args: argparse.Namespace) -> int:
    from nets.images import check_output

    flag = "--convert-vgg16" if args.convert_vgg16 else "--convert-inception"
    if args.convert_vgg16 and args.convert_inception:
        raise ValueError("convert one file at a time: --convert-inception or --convert-vgg16")
    if not args.out:
        raise ValueError(f"{flag} needs --out FILE.npz")
    check_output(args.out, overwrite=args.overwrite)
    if args.convert_vgg16:
        from nets.nv_vgg16_weights import convert_vgg16
        path = convert_vgg16(args.convert_vgg16, args.out, overwrite=args.overwrite, allow_other=args.any_vgg16)
    else:
        from nets.inception_weights import convert_inception
        path = convert_inception(args.convert_inception, args.out, overwrite=args.overwrite,
                                 allow_other=args.any_inception)
    print(f"wrote {path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.convert_inception or args.convert_vgg16:
        return _convert(args)
    if not args.model:
        raise ValueError("name a MODEL file to evaluate (or --convert-inception PTH / --convert-vgg16 PT "
                         "--out NPZ)")
    from train.eval import fakes, run

    specs = run.parse_metrics(args.metrics, args.num)
    model = fakes.load(args.model)
    ev = run.make_evaluator(model, args.data, specs, inception=args.inception, any_inception=args.any_inception,
                            vgg16=args.vgg16, any_vgg16=args.any_vgg16, batch=args.batch, split=args.split,
                            source_split=args.source_split,
                            progress=not args.no_progress)

    if not args.no_jsonl:
        from nets.images import check_output
        for s in specs:
            check_output(run.jsonl_path(args.model, s.name))

    def write(spec, rec):
        if not args.no_jsonl:
            run.append_jsonl(run.jsonl_path(args.model, spec.name), rec)

    records = run.evaluate(ev, specs, write)
    print(run.format_table(records))
    if not args.no_jsonl:
        print("appended to " + ", ".join(str(run.jsonl_path(args.model, s.name)) for s in specs))
    return 0
