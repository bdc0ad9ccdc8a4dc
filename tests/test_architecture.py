"""The layout's promises, checked on the source: the core never imports the embedded world, modules import each
other without cycles, files and functions stay short, and importing the package changes no global state."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lightning_gd"
WORLD_ALLOWED = ("world", "zoo")  # the world itself, and the zoo that loads it as a plugin
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(path: Path, name: str) -> set[str]:
    """Every lightning_gd module that `path` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    known = modules()
    return {m for m in found if m in known and m != name}


def test_nothing_outside_the_world_and_the_zoo_imports_the_world():
    offenders = []
    for name, path in modules().items():
        if name.split(".")[1:2] and name.split(".")[1] in WORLD_ALLOWED:
            continue
        world = {m for m in imported(path, name) if m == "lightning_gd.world" or m.startswith("lightning_gd.world.")}
        strings = [
            node.value
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "lightning_gd.world" in node.value
            and not node.value.lstrip().startswith(("\n", "`"))  # prose in docstrings is fine; module paths are not
            and " " not in node.value.strip()
        ]
        if world or strings:
            offenders.append(f"{name}: {sorted(world) + strings}")
    assert not offenders, "the core must ask the zoo for the world, not import it:\n" + "\n".join(offenders)


def test_the_check_sees_a_world_import(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from lightning_gd.world import load_generator\n")
    assert imported(path, "lightning_gd.bad") == {"lightning_gd.world", "lightning_gd.world.load_generator"} & set(
        modules()
    )


def test_no_import_cycles():
    graph = {name: imported(path, name) for name, path in modules().items()}
    # a package's __init__ importing its own submodules is how packages re-export; not a cycle between modules
    for name in graph:
        graph[name] = {
            m for m in graph[name] if not (m.startswith(name + ".") and modules()[name].name == "__init__.py")
        }
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}  # a submodule importing its package
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" → ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _code_lines(node: ast.FunctionDef) -> int:
    """Lines of a function without its docstring."""
    length = node.end_lineno - node.lineno + 1
    doc = node.body[0] if node.body and isinstance(node.body[0], ast.Expr) else None
    if doc is not None and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
        length -= doc.end_lineno - doc.lineno + 1
    return length


def test_files_and_functions_are_short():
    long_files, long_functions = [], []
    for name, path in modules().items():
        source = path.read_text()
        if len(source.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > MAX_FUNCTION_LINES:
                long_functions.append(f"{name}.{node.name}: {_code_lines(node)} lines")
    assert not long_files and not long_functions, "\n".join(long_files + long_functions)


def test_no_module_picks_a_matplotlib_backend():
    """Figures are drawn on Figure + FigureCanvasAgg: no pyplot, no matplotlib.use (notebooks keep inline plots)."""
    offenders = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n == "matplotlib.pyplot" or n == "pyplot" for n in names):
                    offenders.append(f"{name} imports pyplot")
            if isinstance(node, ast.Attribute) and node.attr == "use" and getattr(node.value, "id", "") == "matplotlib":
                offenders.append(f"{name} calls matplotlib.use")
    assert not offenders, offenders


@pytest.mark.parametrize("module", ["lightning_gd.models.hooks", "lightning_gd.cli.main", "lightning_gd.jobs"])
def test_importing_changes_no_global_state(module):
    probe = (
        "import torch._dynamo.config as c, matplotlib\n"
        "backend = lambda: dict.__getitem__(matplotlib.rcParams, 'backend')  # without resolving it\n"
        "flag, before = c.skip_nnmodule_hook_guards, backend()\n"
        f"import {module}\n"
        "assert c.skip_nnmodule_hook_guards == flag, 'dynamo hook guards flipped'\n"
        "assert backend() == before, 'matplotlib backend changed'\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
