"""The layout's rules, checked: functions short enough to read at once, no test or benchmark editing sys.path."""

from __future__ import annotations

import ast

from helpers import ROOT

LONGEST = 70  # lines of one function, its docstring included


def test_no_function_is_longer_than_70_lines():
    long = []
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "stages").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (lines := node.end_lineno - node.lineno + 1) > LONGEST:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_no_test_or_benchmark_puts_a_folder_on_sys_path():
    edits = [
        str(path.relative_to(ROOT))
        for path in [*(ROOT / "tests").glob("*.py"), *(ROOT / "bench").glob("*.py")]
        if path.name != "test_layout.py"
        and any(f"sys.path.{verb}(" in path.read_text() for verb in ("insert", "append"))
    ]
    assert not edits, edits
