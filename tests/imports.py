"""The project modules a script imports, transitively: what its DVC stage must list as deps."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _module_file(name: str) -> Path | None:
    """`dtrepro.data.d4rl` -> src/dtrepro/data/d4rl.py (or the package's __init__.py); None if not ours."""
    if name != "dtrepro" and not name.startswith("dtrepro."):
        return None
    base = SRC.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path) -> set[Path]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from dtrepro import plots` imports a module; `from dtrepro.x import name` imports x
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                file = _module_file(".".join(parts[:i]))
                if file is not None:
                    found.add(file)
    return found


def closure(script: Path) -> set[Path]:
    """`script` and every project file it imports, transitively (relative to the repository root)."""
    seen, todo = set(), [script.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(_imports(path) - seen)
    return {p.relative_to(ROOT) for p in seen}


def as_deps(files: set[Path]) -> set[str]:
    """Files as dvc.yaml deps: a package folder stands for all its files when every one is imported;
    empty __init__.py files (which change nothing) are left out."""
    files = {f for f in files if not (f.name == "__init__.py" and not (ROOT / f).read_text().strip())}
    deps = {str(f) for f in files}
    for folder in {f.parent for f in files if f.parent != Path("src/dtrepro") and f.parts[0] == "src"}:
        members = {p.relative_to(ROOT) for p in (ROOT / folder).glob("*.py")}
        members = {f for f in members if not (f.name == "__init__.py" and not (ROOT / f).read_text().strip())}
        if members and members <= files:
            deps = {d for d in deps if Path(d).parent != folder} | {str(folder)}
    return deps
