"""Layer rules import-linter cannot state (it forbids only whole external packages).

The package layers themselves are `[tool.importlinter]` in pyproject.toml, run by CI.
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cacheproxy"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package", ["proxy", "store", "simple", "figures"])
def test_only_the_web_layer_and_cli_use_the_aiohttp_server(package: str) -> None:
    # The caching policy is testable and reusable without a web server (the warm command
    # and a future object-store replica drive it directly); aiohttp's client is fine.
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            name
            for name in _imports(path)
            if name == "aiohttp.web" or name.startswith("aiohttp.web_")
        )
        for path in sorted((PACKAGE / package).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_rule_sees_an_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from aiohttp import web\nimport aiohttp.web_response\n")
    assert {"aiohttp.web", "aiohttp.web_response"} <= _imports(module)


def test_comments_cite_what_a_reader_can_open() -> None:
    # A comment cites a PEP, an RFC, an upstream issue or a file in this repository; the
    # team's planning notes (their numbered items) are not in the repository.
    pattern = re.compile(
        r"standards(\.md)?\s*§?\s*[0-9T]|peers(\.md)?\s*§|design\.md|house[-_ ]style"
    )
    root = PACKAGE.parent
    found = [
        f"{path.relative_to(root)}:{n}"
        for folder in ("cacheproxy", "tests", "bench")
        for path in sorted((root / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
