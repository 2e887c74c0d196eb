"""The package's shape: no import cycles, no imports of another module's private names, the
kernels reached only through heatvol.render, and a command line that starts without the heavy
libraries (torch, h5py, Numba). Built from the source with ``ast``, so nothing is imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "heatvol"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(mods: dict[str, Path]):
    """Yield (importer, imported module, imported name or None) for every in-package import."""
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    parts = parts[:len(parts) - node.level + 1]
                    target = ".".join(parts + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("heatvol"):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in mods:
                        yield mod, sub, None
                    elif target in mods:
                        yield mod, target, alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods:
                        yield mod, alias.name, None


def _related(a: str, b: str) -> bool:
    """A package and its own submodules (an __init__ re-exporting them is not a cycle)."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def test_no_import_cycles():
    mods = _modules()
    edges = {m: set() for m in mods}
    for src, dst, _ in _imports(mods):
        if dst != src and not _related(src, dst):
            edges[src].add(dst)
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for mod in sorted(mods):
        if mod not in state:
            visit(mod, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_imports_another_modules_private_names():
    mods = _modules()
    private = sorted({f"{src} imports {dst}.{name}" for src, dst, name in _imports(mods)
                      if name and name.startswith("_") and not name.startswith("__")
                      and dst != src})
    assert not private, "\n".join(private)


def test_only_the_render_package_imports_the_kernels():
    mods = _modules()
    outside = sorted({f"{src} imports {dst}" for src, dst, _ in _imports(mods)
                      if dst.startswith("heatvol.kernels") and not src.startswith(
                          ("heatvol.kernels", "heatvol.render"))})
    assert not outside, "\n".join(outside)


def test_command_line_starts_without_heavy_libraries():
    code = ("import sys; import heatvol.cli; "
            "print(sorted(m for m in ('torch', 'h5py', 'numba', 'cv2', 'scipy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
