"""The four packages talk through the file contracts (docs/contracts.md). The one piece of code
they share is `ibd.errors`, the standard-library-only way every console script reports a user's
mistake in one line; nothing else of `ibd` (and so no torch) reaches hitgen, hitserver or
analysis."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = {"ibd.errors"}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package", ["hitgen", "hitserver", "analysis"])
def test_only_the_error_module_of_ibd_is_shared(package: str) -> None:
    crossing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in imported_modules(path)
        if (name == "ibd" or name.startswith("ibd."))
        and not any(name == s or name.startswith(f"{s}.") for s in SHARED)
    }
    assert not crossing, crossing


def test_ibd_errors_needs_only_the_standard_library() -> None:
    imported = {name.partition(".")[0] for name in imported_modules(ROOT / "ibd/errors.py")}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_the_other_command_lines_do_not_load_torch() -> None:
    code = (
        "import sys, hitgen.cli, hitserver.cli, analysis.cli;"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('ibd')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['ibd', 'ibd.errors']"
