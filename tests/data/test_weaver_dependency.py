"""weaver-core is a test dependency: the tests that compare with it import it and fail without
it. A skipped parity test would report green while checking nothing."""

import ast
import importlib.metadata
from pathlib import Path

TESTS = Path(__file__).parents[1]


def test_weaver_core_is_installed() -> None:
    version = importlib.metadata.version("weaver-core")
    assert tuple(int(part) for part in version.split(".")[:2]) >= (0, 5)


def test_no_test_skips_when_weaver_is_missing() -> None:
    skipping = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            target = node.args[0]
            if (
                name == "importorskip"
                and isinstance(target, ast.Constant)
                and str(target.value).startswith("weaver")
            ):
                skipping.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert skipping == []
