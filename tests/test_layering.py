"""The pure core imports no I/O, rendering or platform code, directly or through the package.

Walks the `import` statements (ast) from each core module, following imports within `reconciler`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "reconciler"
CORE = ["model", "plan", "normalise", "simulate", "safety", "settings", "errors",
        *sorted(p.stem for p in PACKAGE_ROOT.glob("rules*.py"))]
FORBIDDEN = ("requests", "rich", "deepdiff", "yaml", "jsonschema", "sqlite3", "reconciler.platforms",
             "reconciler.sandbox", "reconciler.audit", "reconciler.render", "reconciler.engine", "reconciler.cli",
             "reconciler.config", "reconciler.observe", "reconciler.notify")


def _module_path(name: str) -> Path | None:
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE_ROOT / "__init__.py"
    relative = Path(*parts)
    for candidate in (PACKAGE_ROOT / relative.with_suffix(".py"), PACKAGE_ROOT / relative / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(name: str) -> set[str]:
    path = _module_path(name)
    assert path is not None, f"{name} not found"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else "reconciler." + node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from reconciler import render`
    return found


def transitive_imports(start: str) -> dict[str, str]:
    """Every module reachable from `start`, mapped to the module that imports it."""
    seen: dict[str, str] = {}
    pending = [start]
    while pending:
        current = pending.pop()
        for imported in _imports(current):
            if imported in seen:
                continue
            seen[imported] = current
            if imported.startswith("reconciler") and _module_path(imported) is not None:
                pending.append(imported)
    return seen


def _forbidden(module: str) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN)


def test_the_core_modules_exist() -> None:
    for name in ("model", "plan", "rules", "normalise", "simulate", "safety"):
        assert (PACKAGE_ROOT / f"{name}.py").exists(), name


def test_core_imports_nothing_from_io_rendering_or_platforms() -> None:
    problems = []
    for name in CORE:
        for imported, importer in transitive_imports(f"reconciler.{name}").items():
            if _forbidden(imported):
                problems.append(f"reconciler.{name} reaches {imported} (imported by {importer})")
    assert problems == []


def test_the_walk_would_see_a_forbidden_import() -> None:
    # The walker itself: the engine does import the platforms, so a walk from it must say so.
    reached = transitive_imports("reconciler.engine")
    assert any(_forbidden(m) for m in reached)
