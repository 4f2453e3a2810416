"""The project modules a script imports, transitively, that decide its outputs: what its DVC stage lists as deps.

The plumbing (`PLUMBING`: how a stage runs and how the pipeline is driven: error wording, progress bars, the
thread choice, atomic writes, the CLI, this module) is left out, so that an edit there re-runs no stage.
tests/test_dvc_yaml.py checks dvc.yaml's deps against it, and the train stage fingerprints the code it
runs with it (a resume happens only for the code that was interrupted).
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

DATA_SUFFIXES = (".tsv", ".j2")  # the package's data files (tables, templates), read by the module that names them
PLUMBING = ("dtrepro.runtime", "dtrepro.pipeline")  # packages no stage's outputs depend on


def _module_file(name: str, src: Path) -> Path | None:
    """`dtrepro.data.d4rl` -> src/dtrepro/data/d4rl.py (or the package's __init__.py); None if not ours."""
    if not name.startswith("dtrepro.") or name.startswith(PLUMBING):
        return None
    base = src.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path, src: Path) -> set[Path]:
    """The project files `path` imports, and the data files beside it that it names (d4rl_files.tsv)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(DATA_SUFFIXES):
            if (path.parent / node.value).is_file():
                found.add(path.parent / node.value)
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from dtrepro.reporting import plots` imports a module; `from dtrepro.x import name` imports x
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                file = _module_file(".".join(parts[:i]), src)
                if file is not None:
                    found.add(file)
    return found


def closure(script: Path) -> set[Path]:
    """`script` (in a folder of the repository root, as stages/ is) and every project file it imports, transitively,
    from that repository's src/: relative to its root."""
    root = script.resolve().parents[1]
    seen, todo = set(), [script.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.suffix == ".py":
            todo.extend(_imports(path, root / "src") - seen)
    return {p.relative_to(root) for p in seen}


def code_sha256(script: Path) -> str:
    """One hash of `script` and every project file it imports, transitively: the code a stage runs."""
    digest, root = hashlib.sha256(), script.resolve().parents[1]
    for path in sorted(closure(script)):
        digest.update(str(path).encode() + b"\0" + (root / path).read_bytes() + b"\0")
    return digest.hexdigest()
