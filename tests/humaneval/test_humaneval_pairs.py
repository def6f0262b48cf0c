"""`python -m empathic_lora.humaneval export-pairs`: judgments as TRL-format preference pairs, per
question, ties dropped, annotators the report excludes excluded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_main
from humaneval_samples import two_runs
from test_humaneval_report import judge

from empathic_lora.conversation import parse
from empathic_lora.data.preference_pairs import read
from empathic_lora.errors import run_cli
from empathic_lora.humaneval.__main__ import main as humaneval_main
from empathic_lora.humaneval.storage import Store
from empathic_lora.humaneval.study import build_study


def _main(*args: str) -> None:
    sys.argv = ["python -m empathic_lora.humaneval", *args]
    run_cli(humaneval_main)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    a, b = two_runs(tmp_path, n=6)
    study = build_study(a, b, questions=("Which is more empathetic?", "Which fits better?"), attention_rate=0.2, seed=3)
    store = Store.create_or_open(tmp_path / "study.sqlite", study)
    judge(store, "ann", ["a", "a", "b", None, "a", "b"], checks_right=True)
    judge(store, "careless", ["b"] * 6, checks_right=False)  # fails every attention check: the report excludes them
    return store


def test_export_pairs_one_per_decided_judgment_of_included_annotators(tmp_path: Path, store: Store) -> None:
    out = tmp_path / "pairs.jsonl"
    result = run_main(lambda argv: _main(*argv), "export-pairs", "--db", str(store.path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "wrote 5 pairs" in result.stderr and "1 ties dropped" in result.stderr
    pairs = read(out)
    items = {tuple(parse(item.context)): item for item in store.study.items if item.kind == "pair"}
    winners = [("A" if pair.chosen == items[pair.context].a else "B") for pair in pairs]
    assert sorted(winners) == ["A", "A", "A", "B", "B"]
    for pair in pairs:
        assert {pair.chosen, pair.rejected} == {items[pair.context].a, items[pair.context].b}

    everyone = tmp_path / "everyone.jsonl"
    result = run_main(lambda argv: _main(*argv), "export-pairs", "--db", str(store.path), "--out", str(everyone), "--keep-all")
    assert result.returncode == 0 and len(read(everyone)) == 5 + 6


def test_export_pairs_mistakes_are_one_line(tmp_path: Path, store: Store) -> None:
    out = tmp_path / "pairs.jsonl"
    out.write_text("keep me\n")
    result = run_main(lambda argv: _main(*argv), "export-pairs", "--db", str(store.path), "--out", str(out))
    assert_one_line_error(result, "--out", "exists")
    assert out.read_text() == "keep me\n"
    result = run_main(lambda argv: _main(*argv), "export-pairs", "--db", str(store.path), "--out", str(tmp_path / "x.jsonl"),
                      "--question", "3")
    assert_one_line_error(result, "--question 3", "questions 1 to 2")
