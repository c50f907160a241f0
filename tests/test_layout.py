"""The house plan as tests (README.md, Layout): the top-level shape, the floors, and the thin CLI front.

Floors: nets/ and datasets/ import nothing of gafu; interp/ imports nets/ only; train/ imports nets/, datasets/ and
interp/. Front modules (nets/cli.py, */commands.py, */*_commands.py) may import any library module, but no library
or benchmark module imports a front module, and a front module imports no other one, except nets/cli.py, which
loads the command modules.

Imports are read from the AST: `import` / `from` statements (relative ones resolved), `importlib.import_module`
and `__import__` calls with a constant name, and, in a module that uses importlib at all, any string constant that
is the dotted name of an existing gafu module (nets/cli.py's COMMAND_MODULES, a recipe registry's table).
"""
from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
from collections.abc import Collection
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nets", "train", "interp", "datasets")
ALLOWED = {"nets": set(), "datasets": set(), "interp": {"nets"}, "train": {"nets", "datasets", "interp"}}
CLI = "nets.cli"
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


@dataclasses.dataclass(frozen=True)
class Import:
    module: str          # dotted gafu module (or package) name
    line: int
    how: str             # "import", "import_module", "string"


def module_name(path: Path) -> str:
    """nets/layers.py -> nets.layers, interp/__init__.py -> interp, benchmarks/blend.py -> benchmarks.blend."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def known_modules() -> set[str]:
    """Dotted names of every gafu module and package in the tree."""
    return {module_name(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def is_front(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module == CLI or (module.split(".")[0] in PACKAGES and (last == "commands" or last.endswith("_commands")))


def _absolute(name: str, level: int, importer: str, is_package: bool) -> str:
    """`from ..x import y`'s module as an absolute name, seen from module `importer`."""
    if level == 0:
        return name
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _uses_importlib(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "importlib" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "importlib":
            return True
        if isinstance(node, ast.Name) and node.id == "__import__":
            return True
    return False


def _dynamic_import(node: ast.AST) -> str | None:
    """The constant module name of an `import_module("...")` / `__import__("...")` call, else None."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return None
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    return node.args[0].value if name in ("import_module", "__import__") else None


def gafu_imports(source: str, importer: str, known: Collection[str], *, is_package: bool = False,
                 filename: str = "<string>") -> list[Import]:
    """Every import of a gafu module in `source`, the text of module `importer`; `known` are the modules that
    exist (a `from pkg import name` counts pkg.name when it is one; a bare string counts only if it is one)."""
    tree = ast.parse(source, filename=filename)
    found = []
    strings_count = _uses_importlib(tree)
    dynamic_args = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(a.name, node.lineno, "import") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, importer, is_package)
            found.append(Import(base, node.lineno, "import"))
            found += [Import(f"{base}.{a.name}" if base else a.name, node.lineno, "import") for a in node.names
                      if (f"{base}.{a.name}" if base else a.name) in known]
        elif (name := _dynamic_import(node)) is not None:
            found.append(Import(_absolute(name.lstrip("."), len(name) - len(name.lstrip(".")), importer,
                                          is_package), node.lineno, "import_module"))
            dynamic_args.add(id(node.args[0]))
    if strings_count:
        found += [Import(node.value, node.lineno, "string") for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in dynamic_args
                  and _DOTTED.fullmatch(node.value) and node.value in known]
    return [i for i in found if i.module.split(".")[0] in PACKAGES]


def _file_imports(path: Path, known: Collection[str]) -> list[Import]:
    return gafu_imports(path.read_text(), module_name(path), known, is_package=path.name == "__init__.py",
                        filename=str(path))


def _where(path: Path, imp: Import) -> str:
    kind = {"import": "imports", "import_module": "loads (importlib)", "string": "names (a module string)"}[imp.how]
    return f"{path.relative_to(ROOT)}:{imp.line} {kind} {imp.module}"


def _library_files(pkg: str) -> list[Path]:
    return [p for p in sorted((ROOT / pkg).rglob("*.py")) if not is_front(module_name(p))]


# -- the house ------------------------------------------------------------------------------------------------------
def test_top_level_is_exactly_the_asked_shape():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    if not tracked.strip():
        pytest.skip("not a git checkout")
    top = {line.split("/")[0] for line in tracked.splitlines()}
    assert top <= {"pyproject.toml", "README.md", "nets", "train", "interp", "datasets", "tests", "benchmarks",
                   ".ci", ".gitignore", "docs"}, top
    assert {"pyproject.toml", "README.md", "nets", "tests", ".ci"} <= top


@pytest.mark.parametrize("pkg", PACKAGES)
def test_library_modules_respect_the_floors(pkg):
    known = known_modules()
    bad = [_where(path, imp) for path in _library_files(pkg) for imp in _file_imports(path, known)
           if imp.module.split(".")[0] not in ALLOWED[pkg] | {pkg}]
    assert not bad, f"{pkg}/ may import only {sorted(ALLOWED[pkg])} of gafu:\n" + "\n".join(bad)


@pytest.mark.parametrize("where", [*PACKAGES, "benchmarks"])
def test_no_library_or_benchmark_module_imports_the_front(where):
    known = known_modules()
    files = _library_files(where) if where in PACKAGES else sorted((ROOT / "benchmarks").glob("*.py"))
    bad = [_where(path, imp) for path in files for imp in _file_imports(path, known) if is_front(imp.module)]
    assert not bad, ("front modules (nets/cli.py, */commands.py, */*_commands.py) are imported by nothing; "
                     "move what is shared into a library module:\n" + "\n".join(bad))


def test_front_modules_import_no_other_front_module():
    known = known_modules()
    fronts = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) if is_front(module_name(p))]
    assert any(module_name(p) == CLI for p in fronts)
    bad = [_where(path, imp) for path in fronts if module_name(path) != CLI
           for imp in _file_imports(path, known) if is_front(imp.module) and imp.module != module_name(path)]
    assert not bad, ("a command module imports another one (only nets/cli.py loads them); share library code "
                     "instead:\n" + "\n".join(bad))


def test_the_checker_sees_the_command_modules_the_cli_loads():
    loaded = {i.module for i in _file_imports(ROOT / "nets" / "cli.py", known_modules()) if i.how == "string"}
    assert {"nets.commands", "datasets.commands", "train.commands", "interp.commands"} <= loaded


def test_our_datasets_package_shadows_nothing():
    """A top-level `datasets` clashes with Hugging Face's if both are installed: make sure ours is imported."""
    import datasets
    assert Path(datasets.__file__).resolve().parent == ROOT / "datasets"


# -- the checker itself ---------------------------------------------------------------------------------------------
KNOWN = {"nets", "nets.layers", "nets.cli", "nets.commands", "train", "train.loop", "interp", "interp.toonify",
         "datasets", "datasets.pipeline"}


def _found(source: str, importer: str = "interp.mix", **kw) -> set[tuple[str, str]]:
    return {(i.module, i.how) for i in gafu_imports(source, importer, KNOWN, **kw)}


def test_checker_sees_static_relative_and_dynamic_imports():
    assert _found("import nets.layers as L\nimport numpy\nfrom os import path\n") == {("nets.layers", "import")}
    assert _found("from nets import layers, missing\n") == {("nets", "import"), ("nets.layers", "import")}
    assert _found("from .toonify import f\nfrom ..nets import layers\n", "interp.sub.mix") == {
        ("interp.sub.toonify", "import"), ("interp.nets", "import")}
    assert _found("from .. import toonify\n", "interp.sub.mix") == {("interp", "import"),
                                                                    ("interp.toonify", "import")}
    assert _found("from . import toonify\n", "interp", is_package=True) == {("interp", "import"),
                                                                           ("interp.toonify", "import")}
    src = "import importlib\n\ndef f():\n    return importlib.import_module('train.loop')\n"
    assert _found(src) == {("train.loop", "import_module")}
    assert _found("from importlib import import_module\nm = import_module('datasets.pipeline')\n") == {
        ("datasets.pipeline", "import_module")}
    assert _found("m = __import__('train')\n") == {("train", "import_module")}


def test_checker_counts_module_strings_only_where_importlib_is_used():
    table = 'FAMILIES = {"sg2": "train.loop"}\nSPLIT = "train"\nDOC = "see nets.layers for the convs"\n'
    assert _found(table) == set()                                        # plain strings are not imports ...
    assert _found("import importlib\n" + table) == {("train.loop", "string")}   # ... unless importlib loads them
    assert _found("import importlib.util\nX = ('nets.commands', 'train.steps', 'interp')\n") == {
        ("nets.commands", "string")}                                     # only names of existing modules count


def test_checker_flags_what_the_floors_forbid():
    src = "import importlib\n\ndef f():\n    return importlib.import_module('train.loop')\n"
    bad = [i for i in gafu_imports(src, "interp.mix", KNOWN) if i.module.split(".")[0] not in ALLOWED["interp"]
           | {"interp"}]
    assert bad == [Import("train.loop", 4, "import_module")]
    assert is_front("nets.cli") and is_front("interp.toonify_commands") and is_front("train.commands")
    assert not is_front("train.cli") and not is_front("interp.toonify") and not is_front("benchmarks.commands")
