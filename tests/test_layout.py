"""The layout by job holds: imports only go down the layers declared in pyproject.toml, there are
no import cycles inside a room, the package's top level stays small, and the tests mirror the rooms."""

from __future__ import annotations

import grimp
import pytest
from conftest import ROOT
from importlinter.cli import lint_imports

PACKAGE = ROOT / "empathic_lora"
ROOMS = ("data", "lm", "train", "evaluate", "safety", "session", "chat", "serve", "humaneval", "web", "export")


def test_the_layer_contract_is_kept(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # lint-imports reads pyproject.toml from the working directory
    status = lint_imports(no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert status == 0, out[-4000:]
    assert "Imports only go down KEPT" in out


def test_no_module_takes_part_in_an_import_cycle() -> None:
    graph = grimp.build_graph("empathic_lora")
    cycles = [
        (module, other)
        for module in graph.modules
        for other in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=other, imported=module)
    ]
    assert not cycles, f"modules importing each other, directly or through others: {cycles[:5]}"


def test_the_top_level_holds_at_most_twelve_modules() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 12, modules
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} == set(ROOMS)


def test_the_tests_mirror_the_rooms() -> None:
    tested = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and list(p.glob("test_*.py"))}
    assert tested == {*ROOMS, "e2e"}
