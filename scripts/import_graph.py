"""Import graph of a Python source tree: the import circles (strongly connected components) among its modules.

    python scripts/import_graph.py                 # src/, every import (module level and inside functions)
    python scripts/import_graph.py --module-level  # only imports that run when a module is first imported
    python scripts/import_graph.py --edges langbridge.experiments   # the edges out of matching modules

An edge A -> B means module A imports B (`import B`, `from B import x`, or `from A's package import B` when B
is a submodule). A package's `__init__` is the module named after the package. Exits 1 when a circle exists,
so it can run as a check.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from pathlib import Path


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under `root` (a src/ folder)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            names[".".join(parts)] = path
    return names


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(module: str, path: Path, known: dict[str, Path], module_level: bool) -> list[tuple[str, int]]:
    """(imported module, line) for each import in `path` that names a module of `known`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    nodes: Iterable[ast.AST]
    if module_level:
        # Statements that run at import time: the module body and its if/try blocks, not function bodies.
        def walk(body: list[ast.stmt]) -> Iterable[ast.AST]:
            for node in body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    continue
                if isinstance(node, ast.If) and _is_type_checking(node.test):
                    continue
                yield node
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        yield from walk(inner)

        nodes = walk(tree.body)
    else:
        nodes = ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((_known_prefix(alias.name, known), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in known else _known_prefix(base, known), node.lineno))
    return [(name, line) for name, line in found if name and name != module]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _known_prefix(name: str, known: dict[str, Path]) -> str:
    parts = name.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return ""


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", nargs="?", default="src", help="source folder (default src)")
    parser.add_argument(
        "--module-level", action="store_true", help="ignore imports inside functions (deferred imports)"
    )
    parser.add_argument(
        "--edges", default=None, help="print the edges out of modules starting with this name"
    )
    args = parser.parse_args(argv)
    known = module_names(Path(args.root))
    graph: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], int] = {}
    for name, path in known.items():
        graph[name] = set()
        for target, line in imports(name, path, known, args.module_level):
            graph[name].add(target)
            lines.setdefault((name, target), line)
    if args.edges:
        for name in sorted(graph):
            if name.startswith(args.edges):
                for target in sorted(graph[name]):
                    print(f"{name} -> {target}  ({known[name]}:{lines[name, target]})")
    found = circles(graph)
    for component in found:
        members = set(component)
        print(f"import circle of {len(component)} modules:")
        for name in component:
            for target in sorted(graph[name] & members):
                print(f"  {name} -> {target}  ({known[name]}:{lines[name, target]})")
    scope = "module-level imports" if args.module_level else "all imports"
    print(f"{len(known)} modules, {sum(map(len, graph.values()))} edges ({scope}), {len(found)} circle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
