"""The engine is pure Python + pandas: it never imports Django (STYLE.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "conditions" / "engine"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_engine_module_imports_django():
    modules = sorted(ENGINE.glob("*.py"))
    assert len(modules) >= 9
    offenders = {
        p.name: sorted(m for m in imported_modules(p) if m.split(".")[0] == "django")
        for p in modules
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_importing_the_whole_engine_loads_no_django():
    names = [
        f"conditions.engine.{p.stem}" for p in sorted(ENGINE.glob("*.py")) if p.stem != "__init__"
    ]
    probe = f"import importlib, sys\nfor n in {names!r}: importlib.import_module(n)\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ENGINE.parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
