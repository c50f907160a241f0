"""`gafu` console script: one entry point, subcommands owned by each package.

The top level of the repository is fixed (nets/, train/, interp/, datasets/), so the front lives here. It imports
the other packages only lazily, by the module names below: each `<pkg>/commands.py` defines
`register(subparsers)` that adds its subcommands, with `set_defaults(func=...)` pointing at a thin wrapper over one
library function. Those modules import only argparse at module level, so `gafu --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("nets.commands", "datasets.commands", "train.commands", "interp.commands",
                   "interp.feature_commands", "interp.toonify_commands",
                   "train.demo_commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gafu", description="画風 gafu: move images between visual domains (JAX/Flax).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:      # that package has no commands (yet); anything else is a real error
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        # Library code raises these with messages that name the file / key / value at fault.
        print(f"gafu {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
