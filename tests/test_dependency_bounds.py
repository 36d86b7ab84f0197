"""pyproject.toml's dependency bounds say what the code needs, and what it imports is declared.

The lower bounds in REQUIRED_FOR were found by installing older releases and running the
tests (or reading the package's own files): each names what in our code needs it. If the code
still uses that API, lowering the bound breaks an install that pip would accept.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import import_module, metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "trainyard"


@dataclass(frozen=True)
class Needs:
    """`package` must be at least `minimum` while the source contains `marker`."""

    package: str
    minimum: str
    marker: str
    why: str


REQUIRED_FOR = (
    Needs("torch", "2.6", "from torch.distributed.fsdp import fully_shard", "public FSDP2"),
    Needs("starlette", "0.48", "HTTP_422_UNPROCESSABLE_CONTENT", "RFC 9110 status names"),
    Needs("fastapi", "0.130", 'ser_json_inf_nan="strings"', "responses serialized by pydantic"),
    Needs("pydantic", "2.8", 'ser_json_inf_nan="strings"', "the 'strings' option"),
    Needs("sqlalchemy", "2.0.33", "type_annotation_map", "string annotations of dict[str, Any]"),
    Needs("typer", "0.13", "Path | None", "PEP 604 optional options"),
    Needs("awkward", "2.10", "ak.from_arrow", "Arrow tables without pandas"),
    Needs("pyarrow", "17", "ak.from_arrow", "what awkward 2.10 converts from"),
    Needs("psycopg", "3.1.4", "", "the first psycopg-binary for Python 3.11"),
)


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(group: str | None = None) -> dict[str, Requirement]:
    project = _pyproject()["project"]
    lines = project["dependencies"] if group is None else project["optional-dependencies"][group]
    parsed = (Requirement(line) for line in lines)
    return {canonicalize_name(r.name): r for r in parsed if r.name != "trainyard"}


def _all_requirements() -> dict[str, Requirement]:
    everything = _requirements()
    for group in _pyproject()["project"]["optional-dependencies"]:
        everything.update(_requirements(group))
    return everything


def _lower_bound(specifier: SpecifierSet) -> Version | None:
    bounds = [Version(s.version) for s in specifier if s.operator in (">=", "==")]
    return max(bounds) if bounds else None


def _source_text() -> str:
    return "\n".join(path.read_text() for path in sorted(SOURCE.rglob("*.py")))


@pytest.mark.parametrize("needs", REQUIRED_FOR, ids=lambda n: n.package)
def test_lower_bounds_cover_what_the_code_uses(needs: Needs) -> None:
    requirement = _all_requirements()[canonicalize_name(needs.package)]
    if needs.marker:
        assert needs.marker in _source_text(), f"update REQUIRED_FOR: {needs.marker!r} is gone"
    declared = _lower_bound(requirement.specifier)
    assert declared is not None, f"{requirement} has no lower bound"
    assert declared >= Version(needs.minimum), (
        f"pyproject.toml allows {requirement}, but {needs.why} needs {needs.minimum}"
    )


def test_every_main_dependency_has_a_lower_bound() -> None:
    unbounded = [str(r) for r in _requirements().values() if _lower_bound(r.specifier) is None]
    assert unbounded == []


def test_installed_versions_satisfy_the_declared_ranges() -> None:
    """What the suite runs against is inside the declared ranges, so the ranges are tested."""
    outside = {
        name: metadata.version(name)
        for name, requirement in _all_requirements().items()
        if not requirement.specifier.contains(metadata.version(name), prereleases=True)
    }
    assert outside == {}


def test_the_apis_behind_the_bounds_exist_in_the_installed_versions() -> None:
    from starlette import status

    fsdp = import_module("torch.distributed.fsdp")
    assert callable(fsdp.fully_shard)
    used = set(re.findall(r"status\.(HTTP_\d{3}_[A-Z_]+)", _source_text()))
    assert "HTTP_422_UNPROCESSABLE_CONTENT" in used
    assert sorted(name for name in used if not hasattr(status, name)) == []


def test_ruff_is_pinned_to_the_version_that_runs() -> None:
    (specifier,) = _requirements("test")["ruff"].specifier
    assert specifier.operator == "=="
    assert specifier.version == metadata.version("ruff")


def test_weaver_core_range_is_closed_and_holds_the_tested_release() -> None:
    specifier = _requirements("test")["weaver-core"].specifier
    assert {s.operator for s in specifier} == {">=", "<"}
    assert specifier.contains(metadata.version("weaver-core"))


def test_the_makefile_torch_agrees_with_pyproject() -> None:
    """make keeps a torch of at least TORCH_MIN and installs TORCH otherwise; both must meet
    the declared bound, or pip would replace the torch make chose."""
    makefile = (ROOT / "Makefile").read_text()
    torch_min = re.search(r"^TORCH_MIN := (\S+)$", makefile, re.MULTILINE)
    torch_pin = re.search(r"^TORCH := torch==(\S+)$", makefile, re.MULTILINE)
    assert torch_min is not None and torch_pin is not None
    requirement = _requirements()["torch"]
    assert _lower_bound(requirement.specifier) == Version(torch_min[1])
    assert requirement.specifier.contains(torch_pin[1])


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level modules imported by our source -> the files importing them outside a
    `try: ... except ImportError` (an import so guarded is optional by design)."""
    found: dict[str, list[str]] = {}

    def visit(node: ast.AST, path: Path, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            catches = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            guarded = guarded or bool(catches & {"ImportError", "ModuleNotFoundError"})
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top != "trainyard" and top not in sys.stdlib_module_names and not guarded:
                found.setdefault(top, []).append(str(path.relative_to(ROOT)))
        for child in ast.iter_child_nodes(node):
            visit(child, path, guarded)

    for path in sorted(SOURCE.rglob("*.py")):
        visit(ast.parse(path.read_text()), path, guarded=False)
    return found


def test_every_imported_package_is_declared() -> None:
    distributions = metadata.packages_distributions()
    declared = set(_all_requirements())
    undeclared = {
        module: files
        for module, files in _third_party_imports().items()
        if not {canonicalize_name(d) for d in distributions.get(module, [module])} & declared
    }
    assert undeclared == {}, "declare these in pyproject.toml (or guard an optional import)"
