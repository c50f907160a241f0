"""The house plan (design.md) as tests: the top-level shape and who may import whom."""
import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nets", "train", "interp", "datasets")
# Library floors. The CLI front (nets/cli.py, */commands.py, */*_commands.py) may import anything.
ALLOWED = {"nets": set(), "datasets": set(), "train": {"nets", "datasets"}, "interp": {"nets"}}


def _is_front(path: Path) -> bool:
    return path.name in ("cli.py", "commands.py") or path.name.endswith("_commands.py")


def _gafu_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES}
    return found


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
    for path in sorted((ROOT / pkg).rglob("*.py")):
        if _is_front(path):
            continue
        bad = _gafu_imports(path) - ALLOWED[pkg] - {pkg}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; {pkg}/ may import {sorted(ALLOWED[pkg])}"


def test_our_datasets_package_shadows_nothing():
    """A top-level `datasets` clashes with Hugging Face's if both are installed: make sure ours is imported."""
    import datasets
    assert Path(datasets.__file__).resolve().parent == ROOT / "datasets"
