"""Subcommand of train/: `gafu train` (train from scratch, fine-tune with --init-from, or resume a workdir)."""
from __future__ import annotations

import argparse

EPILOG = """examples:
  gafu train --config tiny --data DIR --workdir runs/demo
  gafu train --config config-f --data DIR --workdir runs/ffhq --set model.resolution=256 --set batch=32
  gafu train --config paper256 --data DIR --workdir runs/toon --init-from ffhq256 \\
      --set finetune.freeze_d=4 --set ada.kimg=100 --steps 2000
  gafu train --workdir runs/demo                      # resume (the workdir's config.json)
multi-host (run on every host / TPU VM worker; JAX finds the coordinator on TPU pods):
  gafu train --distributed --config config-f --data DIR --workdir gs-or-shared/run
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model (data-parallel, resumable)",
                       description="Train a model of any family on all local devices with its recipe (the "
                                   "preset or config file picks the family; StyleGAN2: the NV recipe with lazy R1, "
                                   "path length, style mixing, EMA, ADA); resumes from the workdir's latest "
                                   "checkpoint.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="preset (e.g. tiny, paper256, config-f), a .json file or file.py[:arg] with "
                                    "get_config(arg); default: the workdir's config.json when resuming")
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, samples, EMA export)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable, e.g. --set loss.r1_gamma=2 --set model.resolution=64")
    p.add_argument("--data", help="dataset (shortcut for --set data=...)")
    p.add_argument("--init-from", help="model file or training workdir to fine-tune from "
                                       "(shortcut for --set init_from=...)")
    p.add_argument("--steps", type=int, help="total steps (shortcut for --set steps=N)")
    p.add_argument("--parallel", choices=["shard_map", "pmap"], help="device mapping (default shard_map)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("multi-process (jax.distributed)")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() (auto-detects TPU pods, SLURM, Open MPI)")
    g.add_argument("--coordinator", help="host:port of process 0 (implies --distributed)")
    g.add_argument("--num-processes", type=int)
    g.add_argument("--process-id", type=int)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    if args.distributed or args.coordinator:
        from train.parallel import init_distributed
        init_distributed(args.coordinator, args.num_processes, args.process_id)
    from train.config import format_config, resolve_config

    shortcuts = {"data": args.data, "init_from": args.init_from, "steps": args.steps, "parallel": args.parallel}
    cfg = resolve_config(args.config, args.workdir, args.set, shortcuts)
    if args.dry_run:
        print(format_config(cfg))
        return 0
    from train.loop import run

    res = run(cfg, args.workdir, progress=not args.no_progress)
    if res.status != "done":
        print(f"gafu train: stopped at step {res.step} ({res.status}); latest checkpoint: "
              f"step {res.last_checkpoint}")
        return 3
    print(f"done: {res.step} steps; checkpoint {res.workdir / 'ckpt' / str(res.last_checkpoint)}; "
          f"model file {res.workdir / 'ema'}")
    return 0
