"""The package tree is the data flow: lower layers never import upper ones, and no import cycles.

parse (dicom) -> index -> keep current (live) -> view -> front-ends (fuse),
with net and export on the side, service composing them and commands on
top; demo data stands apart from the product.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dicomfs"

# Each sub-package may import only packages of a lower rank, and its own.
RANK = {
    "": 0,  # dicomfs/__init__.py, errors.py
    "dicom": 1,
    "index": 2,
    "live": 3,
    "view": 4,
    "fuse": 5,
    "net": 5,
    "export": 5,
    "share": 6,  # above fuse: it uses fuse.caller (dicomfs/share/__init__.py says why)
    "service": 7,
    "commands": 8,
    "__main__": 9,
}
# demo writes synthetic DICOM: it may use the records only, and only commands use it.
DEMO_MAY_IMPORT = {"", "dicom"}
DEMO_USED_BY = {"commands", "demo"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    return parts[1] if parts[1] not in ("errors",) else ""


def imports(path: Path) -> set[str]:
    """Every dicomfs module a file imports, at top level or inside a function."""
    found: set[str] = set()
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dicomfs")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dicomfs"):
            assert node.module is not None
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downward(path: Path) -> None:
    me = module_name(path)
    mine = "__main__" if me == "dicomfs.__main__" else layer(me)
    for target in imports(path):
        theirs = layer(target)
        if theirs == mine:
            continue
        if mine == "demo":
            assert theirs in DEMO_MAY_IMPORT, f"{me} imports {target}"
        elif theirs == "demo":
            assert mine in DEMO_USED_BY, f"{me} imports demo data ({target})"
        else:
            assert RANK[theirs] < RANK[mine], f"{me} (layer {mine}) imports {target}"


def test_no_import_cycles() -> None:
    graph = {module_name(p): imports(p) for p in SOURCES}
    # a module importing a package's __init__ also depends on what that imports
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or node.startswith(nxt + "."):
                continue  # a module's own package __init__ is loaded before it
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_every_sub_package_says_what_it_owns() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc and len(doc.splitlines()) >= 2, f"{init}: say what it may import"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_fit_in_a_head(path: Path) -> None:
    """Over 500 lines needs a reason at the top of the module ("Longer than ...")."""
    text = path.read_text()
    if len(text.splitlines()) > 500:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert "Longer than" in doc, f"{path.name}: {len(text.splitlines())} lines, no reason"


def test_commands_that_only_read_import_neither_pydicom_nor_sqlite_utils() -> None:
    """A re-run, ``status`` or ``ls`` starts without the parser or sqlite-utils (0.25 s).

    They are imported where they work: the parser at the first file to
    parse, sqlite-utils to make the full-text table or to search, pydicom's
    writer by ``export``.
    """
    code = (
        "import sys, dicomfs.commands.cli, dicomfs.live.scan, dicomfs.live.ingest\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydicom', 'sqlite_utils'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
