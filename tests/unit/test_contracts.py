"""The import-linter contracts (pyproject.toml [tool.importlinter]) hold on the tree and can fail.

Each violation test copies the package to a temporary directory, plants one bad import, runs
lint-imports on the copy and checks that exactly the contract guarding that rule reports it broken.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "qwenfleet"
PYPROJECT = REPO / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

LAYERS = "Layers: shells over cores"
KUBE = "Kube: client over resources"
PURE = "Pure cores import no I/O"
PURE_INIT = "Packages of pure modules have pure __init__"

# The modules the issue names; the contract may forbid more.
MUST_FORBID = {"os", "time", "urllib", "threading", "qwenfleet.kube"}
# The pure modules the design names; the contract may list more.
MUST_BE_PURE = {
    "qwenfleet.api",
    "qwenfleet.catalog",
    "qwenfleet.planner",
    "qwenfleet.render",
    "qwenfleet.docsgen",
    "qwenfleet.autoscale.policy",
    "qwenfleet.router.policy",
    "qwenfleet.router.requests",
    "qwenfleet.sim.engine",
}


def _config() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    return config


def _contract(name: str) -> dict[str, Any]:
    (contract,) = [c for c in _config()["contracts"] if c["name"] == name]
    return contract


def _all_modules() -> list[str]:
    """Every Python module under operator/qwenfleet, by dotted name (packages by their __init__)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _layer_names(layer: str) -> list[str]:
    return [name.strip() for name in re.split(r"[|:]", layer)]


def _covered(module: str, prefixes: list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# --- the configuration itself ------------------------------------------------------------------


def test_every_module_under_qwenfleet_is_in_exactly_one_layer() -> None:
    contract = _contract(LAYERS)
    assert contract["exhaustive"] is True
    (container,) = contract["containers"]
    assert container == "qwenfleet"
    layers = [f"{container}.{name}" for layer in contract["layers"] for name in _layer_names(layer)]
    assert len(layers) == len(set(layers)), "a module is named in two layers"
    modules = _all_modules()
    assert "qwenfleet.planner" in modules and "qwenfleet.kube.client" in modules  # the walk sees the tree
    missing = [m for m in modules if m != "qwenfleet" and not _covered(m, layers)]
    assert missing == [], f"modules in no layer: {missing}"
    # The root __init__ is the container itself: it must stay empty of qwenfleet imports.
    assert "import" not in (PACKAGE / "__init__.py").read_text()


def test_no_layer_is_optional() -> None:
    for contract in _config()["contracts"]:
        for layer in contract.get("layers", []):
            assert "(" not in layer and ")" not in layer, f"{contract['name']}: optional layer {layer!r}"


def test_no_contract_allows_indirect_imports() -> None:
    forbidden = [c for c in _config()["contracts"] if c["type"] == "forbidden"]
    assert forbidden
    for contract in forbidden:
        assert contract.get("allow_indirect_imports", False) is False, contract["name"]


def test_pure_contracts_forbid_the_io_modules() -> None:
    pure, pure_init = _contract(PURE), _contract(PURE_INIT)
    assert set(pure["forbidden_modules"]) >= MUST_FORBID
    assert pure["forbidden_modules"] == pure_init["forbidden_modules"], "the two lists drifted apart"
    assert set(pure["source_modules"]) >= MUST_BE_PURE


def test_every_module_is_a_listed_shell_or_checked_as_pure() -> None:
    shells = tomllib.loads(PYPROJECT.read_text())["tool"]["qwenfleet"]["shells"]
    pure = _contract(PURE)["source_modules"]
    packages = set(_contract(PURE_INIT)["source_modules"])  # mixed packages: their __init__ is checked there
    unplaced = [m for m in _all_modules() if m not in packages and not _covered(m, shells) and not _covered(m, pure)]
    assert not unplaced, f"neither a listed shell nor checked as pure: {unplaced}"
    both = [m for m in _all_modules() if _covered(m, shells) and _covered(m, pure)]
    assert not both, f"both a shell and pure: {both}"


CLOCKS = re.compile(r"\b(datetime\.now|datetime\.utcnow|date\.today|time\.time|time\.monotonic|perf_counter)\b")


def test_pure_modules_read_no_clock() -> None:
    """Time comes into a pure module as a parameter; `datetime` may parse and format, never read the clock."""
    pure = _contract(PURE)["source_modules"]
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if _covered(name, pure) and CLOCKS.search(path.read_text()):
            readers.append(name)
    assert not readers, f"pure modules reading a clock: {readers}"


def test_every_package_above_a_pure_module_has_a_checked_init() -> None:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first; each must be checked as pure too."""
    pure_sources = _contract(PURE)["source_modules"]
    init_sources = set(_contract(PURE_INIT)["source_modules"])
    for source in pure_sources:
        parts = source.split(".")
        for depth in range(1, len(parts)):
            parent = ".".join(parts[:depth])
            assert parent in init_sources or _covered(parent, pure_sources), f"{parent} (above {source})"


# --- the contracts against a real tree ---------------------------------------------------------


class Tree:
    """A copy of the package and the configuration, to break on purpose."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.src = root / "src"
        shutil.copytree(PACKAGE, self.src / "qwenfleet", ignore=shutil.ignore_patterns("__pycache__"))
        self.config = root / "pyproject.toml"
        shutil.copy(PYPROJECT, self.config)

    def module_path(self, module: str) -> Path:
        base = self.src.joinpath(*module.split("."))
        return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")

    def add_import(self, module: str, imported: str) -> None:
        path = self.module_path(module)
        path.write_text(path.read_text() + f"\nimport {imported}  # planted by the test\n")

    def add_module(self, module: str, text: str) -> None:
        path = self.module_path(module)
        assert not path.exists()
        path.write_text(text)

    def lint(self) -> tuple[dict[str, str], str]:
        """Each contract's verdict (KEPT or BROKEN) and the full report."""
        env = {**os.environ, "PYTHONPATH": str(self.src)}
        result = subprocess.run(
            [str(LINT_IMPORTS), "--config", str(self.config), "--no-cache"],
            check=False,
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        report = result.stdout + result.stderr
        verdicts = dict((m[1], m[2]) for m in re.finditer(r"^(.+) (KEPT|BROKEN)$", report, re.MULTILINE))
        assert verdicts, report
        assert (result.returncode == 0) == all(v == "KEPT" for v in verdicts.values()), report
        return verdicts, report


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


def _listed_source(module: str) -> str:
    """The purity contract's source entry that covers a module (entries are checked as packages)."""
    (listed,) = [s for s in _contract(PURE)["source_modules"] if _covered(module, [s])]
    return str(listed)


def _only_broken(verdicts: dict[str, str], *names: str) -> None:
    assert {n for n, v in verdicts.items() if v == "BROKEN"} == set(names), verdicts


def test_the_clean_tree_keeps_every_contract(tree: Tree) -> None:
    verdicts, report = tree.lint()
    assert set(verdicts) == {c["name"] for c in _config()["contracts"]}, report
    _only_broken(verdicts)


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("qwenfleet.planner", "time"),
        ("qwenfleet.render.modelserver", "os"),
        ("qwenfleet.catalog.gpus", "urllib.request"),
        ("qwenfleet.autoscale.policy", "threading"),
        ("qwenfleet.router.policy", "asyncio"),
        ("qwenfleet.sim.engine", "subprocess"),
        ("qwenfleet.docsgen", "socket"),
    ],
)
def test_a_pure_module_importing_io_breaks_the_purity_contract(tree: Tree, source: str, forbidden: str) -> None:
    tree.add_import(source, forbidden)
    verdicts, report = tree.lint()
    _only_broken(verdicts, PURE)
    top = forbidden.split(".", maxsplit=1)[0]  # external packages are seen whole
    assert f"{_listed_source(source)} is not allowed to import {top}" in report, report
    assert f"{source} -> {top}" in report, report


def test_a_pure_module_importing_kube_breaks_purity_and_layers(tree: Tree) -> None:
    tree.add_import("qwenfleet.api.plan", "qwenfleet.kube.resources")
    verdicts, report = tree.lint()
    _only_broken(verdicts, PURE, LAYERS)
    assert "qwenfleet.api is not allowed to import qwenfleet.kube" in report, report
    assert "qwenfleet.api.plan -> qwenfleet.kube.resources" in report, report


@pytest.mark.parametrize("loophole_open", [False, True])
def test_io_through_a_helper_module_breaks_the_purity_contract(tree: Tree, loophole_open: bool) -> None:
    """The helper is in the same package, so no layer is crossed: only indirect checking sees it."""
    tree.add_module("qwenfleet.sim.wallclock", '"""Helper."""\n\nimport time\n\nNOW = time.monotonic\n')
    tree.add_import("qwenfleet.sim.perf", "qwenfleet.sim.wallclock")
    if loophole_open:  # what the contract let through before: proves the test depends on the setting
        text = tree.config.read_text()
        assert "allow_indirect_imports = false" in text
        tree.config.write_text(text.replace("allow_indirect_imports = false", "allow_indirect_imports = true"))
    verdicts, report = tree.lint()
    if loophole_open:
        _only_broken(verdicts)
        return
    _only_broken(verdicts, PURE)
    assert "qwenfleet.sim.perf is not allowed to import time" in report, report
    assert "qwenfleet.sim.perf -> qwenfleet.sim.wallclock" in report, report


def test_io_through_a_shell_in_the_same_package_breaks_the_purity_contract(tree: Tree) -> None:
    tree.add_module("qwenfleet.router.scrape", '"""Helper."""\n\nimport aiohttp\nimport qwenfleet.kube\n')
    tree.add_import("qwenfleet.router.requests", "qwenfleet.router.scrape")
    verdicts, report = tree.lint()
    _only_broken(verdicts, PURE)
    assert "qwenfleet.router.requests is not allowed to import aiohttp" in report, report
    assert "qwenfleet.router.requests is not allowed to import qwenfleet.kube" in report, report


def test_io_in_the_init_of_a_pure_modules_package_breaks_its_contract(tree: Tree) -> None:
    tree.add_import("qwenfleet.router", "os")
    verdicts, report = tree.lint()
    _only_broken(verdicts, PURE_INIT)
    assert "qwenfleet.router is not allowed to import os" in report, report


Plant = Callable[[Tree], None]


@pytest.mark.parametrize(
    ("plant", "expected"),
    [
        # a core importing a shell above it
        (lambda t: t.add_import("qwenfleet.catalog.models", "qwenfleet.planner"), "qwenfleet.catalog.models"),
        (lambda t: t.add_import("qwenfleet.kube.client", "qwenfleet.router.cli"), "qwenfleet.kube.client"),
        # siblings in one layer importing each other
        (lambda t: t.add_import("qwenfleet.devcluster.nodes", "qwenfleet.controller.main"), "qwenfleet.devcluster"),
        (lambda t: t.add_import("qwenfleet.sim.tokens", "qwenfleet.docsgen"), "qwenfleet.sim"),
        # a new top-level module that nobody placed in a layer
        (lambda t: t.add_module("qwenfleet.gateway", '"""New."""\n'), "qwenfleet.gateway"),
    ],
    ids=["core-imports-shell", "kube-imports-router", "sibling-shells", "sibling-cores", "unplaced-module"],
)
def test_the_layers_contract_breaks(tree: Tree, plant: Plant, expected: str) -> None:
    plant(tree)
    verdicts, report = tree.lint()
    assert verdicts[LAYERS] == "BROKEN", report
    assert verdicts[KUBE] == "KEPT", report
    assert expected in report.split("Broken contracts", 1)[1], report


def test_kube_resources_importing_the_client_breaks_the_kube_contract(tree: Tree) -> None:
    tree.add_import("qwenfleet.kube.resources", "qwenfleet.kube.client")
    verdicts, report = tree.lint()
    _only_broken(verdicts, KUBE)
    assert "qwenfleet.kube.resources -> qwenfleet.kube.client" in report, report
