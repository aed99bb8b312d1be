"""Checks on the source and on docs/reliability.md itself (C6, and the case map).

The map is a contract: every case of reliability.md (A1 to I2) has a row,
and every test a row names exists, so a reader can go from a case to the
test that proves it and the link cannot rot silently.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"
CASES = {"A": 12, "B": 4, "C": 7, "D": 6, "E": 6, "F": 5, "G": 9, "H": 4, "I": 3, "S": 10, "W": 12}
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def rows() -> dict[str, str]:
    """case id -> its table row (the line of the table that starts with the id)."""
    found: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\|\s*([A-IS-W]\d{1,2})\s*\|", line)
        if match:
            assert match.group(1) not in found, f"{match.group(1)} has two rows"
            found[match.group(1)] = line
    return found


def test_every_case_has_a_row_with_a_behaviour_and_a_test() -> None:
    table = rows()
    expected = {f"{section}{n}" for section, count in CASES.items() for n in range(1, count + 1)}
    assert set(table) == expected, sorted(set(table) ^ expected)
    for case, line in table.items():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 4, f"{case}: expected 4 columns, got {len(cells)}"
        assert all(cells), f"{case}: an empty cell"
        assert TEST_REF.search(cells[3]), f"{case}: names no test"


def test_every_named_test_exists() -> None:
    missing = []
    for case, line in rows().items():
        for path, name in TEST_REF.findall(line):
            source = REPO / path
            if not source.is_file():
                missing.append(f"{case}: {path} does not exist")
                continue
            names = {
                node.name
                for node in ast.walk(ast.parse(source.read_text()))
                if isinstance(node, ast.FunctionDef)
            }
            if name not in names:
                missing.append(f"{case}: {path}::{name} does not exist")
    assert not missing, "\n".join(missing)


def test_nothing_reaches_a_shell() -> None:
    """C6: no shell anywhere in the package; subprocesses get argument lists only."""
    offenders = []
    for path in sorted((REPO / "dicomfs").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if func in ("os.system", "os.popen", "subprocess.getoutput", "os.execlp"):
                offenders.append(f"{where}: {func}")
            for keyword in node.keywords:
                if keyword.arg == "shell" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    offenders.append(f"{where}: shell={ast.unparse(keyword.value)}")
            if func.startswith("subprocess.") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant | ast.JoinedStr | ast.BinOp):
                    offenders.append(f"{where}: a command string, not a list")
    assert not offenders, "\n".join(offenders)
