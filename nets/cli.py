"""`gafu` console script: one entry point, subcommands owned by each package.

The top level of the repository is fixed (nets/, train/, interp/, datasets/), so the front lives here. It imports
the other packages only lazily, by the module names below: each `<pkg>/commands.py` defines
`register(subparsers)` that adds its subcommands, with `set_defaults(func=...)` pointing at a thin wrapper over one
library function. Those modules import only argparse at module level, so `gafu --help` stays fast.

Compiled programs are kept in JAX's persistent compilation cache, so the second run of a command skips most of
its compiling: `compile_cache_dir` says where, and `--no-compile-cache` or GAFU_COMPILE_CACHE=0 turns it off.

Every failure of the user's input (a bad flag, a missing or damaged file, a bad value, an output that cannot be
written) ends in one line `gafu <cmd>: error: ...` and exit status 2; `gafu --debug <cmd>` or GAFU_DEBUG=1 shows
the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import zipfile

COMMAND_MODULES = ("nets.commands", "datasets.commands", "train.commands", "interp.commands",
                   "interp.feature_commands", "interp.toonify_commands", "interp.spade_commands", "interp.gnr_commands",
                   "interp.web_commands", "nets.align_commands", "train.demo_commands", "train.eval_commands")
GAFU_PACKAGES = ("nets", "datasets", "train", "interp")
# Readers of user files raise these: our own ValueErrors (ModelFileError, ConvertError, ...), OSError (missing,
# unreadable, not writable), numpy's EOFError on an empty .npz, zipfile's BadZipFile, Pillow's
# DecompressionBombError, and TensorStore's bare Exception (through orbax) on a damaged checkpoint.
USER_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile)
USER_ERROR_MODULES = ("PIL", "orbax", "tensorstore")
# The compile cache: programs that took this long to compile are kept; the folder is held under this many bytes
# (least recently used entries go first). A size limit also makes JAX lock the folder around every read and
# write (filelock), so that processes sharing it never read an entry another is still writing.
COMPILE_CACHE_MIN_SECS = 0.3
COMPILE_CACHE_MAX_BYTES = 4 << 30


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors ("gafu blend: error: argument --alpha: ..."); subparsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gafu", description="画風 gafu: move images between visual domains (JAX/Flax).")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also GAFU_DEBUG=1)")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not read or write the persistent compilation cache (also GAFU_COMPILE_CACHE=0; "
                             "GAFU_COMPILE_CACHE=DIR moves it from ~/.cache/gafu/jax)")
    parser.add_argument("--native-size", action="store_true",
                        help="write PNGs at the models' own resolution; by default images and grid cells under "
                             "128 px are nearest-upscaled so they can be seen (also GAFU_NATIVE_SIZE=1)")
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


def compile_cache_dir(env: dict[str, str] | None = None) -> str | None:
    """Where the CLI keeps compiled programs: GAFU_COMPILE_CACHE if it names a folder, None if it is 0 / off,
    else gafu/jax under the user's cache folder ($XDG_CACHE_HOME, or ~/.cache)."""
    env = os.environ if env is None else env
    value = env.get("GAFU_COMPILE_CACHE", "").strip()
    if value.lower() in ("0", "off", "false", "no"):
        return None
    if value and value.lower() not in ("1", "on", "true", "yes"):
        return os.path.expanduser(value)
    return os.path.join(env.get("XDG_CACHE_HOME") or os.path.expanduser(os.path.join("~", ".cache")), "gafu", "jax")


def enable_compile_cache(path: str) -> str:
    """Turn on JAX's persistent compilation cache at `path`, unless a cache folder is set already (by
    JAX_COMPILATION_CACHE_DIR or by the program that called `main`): that one is kept. Returns the folder in use.

    Before jax is imported this only sets JAX's environment variables, so commands that never compile pay nothing.
    """
    if "jax" in sys.modules:
        import jax
        if jax.config.jax_compilation_cache_dir:
            return jax.config.jax_compilation_cache_dir
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILE_CACHE_MIN_SECS)
        jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_MAX_BYTES)
        return path
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", path)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(COMPILE_CACHE_MIN_SECS))
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(COMPILE_CACHE_MAX_BYTES))
    return os.environ["JAX_COMPILATION_CACHE_DIR"]


def disable_compile_cache() -> None:
    """No persistent compilation cache for this process, even one set by JAX_COMPILATION_CACHE_DIR."""
    if "jax" in sys.modules:
        import jax
        jax.config.update("jax_enable_compilation_cache", False)
    else:
        os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"


def is_user_error(e: BaseException) -> bool:
    """Is `e` a failure of the user's input (reported in one line), rather than a bug (shown as a traceback)?"""
    return (isinstance(e, USER_ERRORS) or type(e) is Exception
            or type(e).__module__.split(".")[0] in USER_ERROR_MODULES)


def error_line(e: BaseException) -> str:
    """The message of `e`; a foreign library's is cut to its first line (TensorStore appends its whole spec)."""
    text = str(e).strip() or type(e).__name__
    if type(e).__module__.split(".")[0] in GAFU_PACKAGES:
        return text                 # ours: may list several problems, one per line
    first = text.splitlines()[0]
    if "orbax" in sys.modules:              # then it may be TensorStore's, which ends in its whole spec
        from nets.modelfile import first_line
        first = first_line(text)
    return first if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {first}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.native_size:
        os.environ["GAFU_NATIVE_SIZE"] = "1"     # read by nets.images.view_min (no import of nets.images here)
    cache = None if args.no_compile_cache else compile_cache_dir()
    if cache:
        enable_compile_cache(cache)
    else:
        disable_compile_cache()
    try:
        rc = args.func(args)
    except Exception as e:
        if args.debug or os.environ.get("GAFU_DEBUG", "") not in ("", "0") or not is_user_error(e):
            raise
        print(f"gafu {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
