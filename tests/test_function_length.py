"""Functions short enough to read at once: none over 60 lines in the program layer's scheduler
and writers (dataflows/) or in the golden models (verification/golden*.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 60
FILES = sorted((ROOT / "dataflows").glob("*.py")) + sorted((ROOT / "verification").glob("golden*.py"))


def test_no_function_over_the_limit():
    long = []
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert FILES and not long, "functions over 60 lines: " + "; ".join(long)
