import logging
from pathlib import Path

import pytest

from empathic_lora.data.datamodule import build_examples
from empathic_lora.data.raw_csv import FIELDS, read_split
from empathic_lora.errors import UserError

HEADER = ",".join(FIELDS)


@pytest.mark.parametrize("split,rows", [("train", 84_204), ("valid", 12_074), ("test", 10_969)])
def test_real_split_row_counts(ed_dir: Path, split: str, rows: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        parsed = read_split(ed_dir / f"{split}.csv")
    assert len(parsed) == rows
    assert "malformed" not in caplog.text  # the real files have no malformed line


def test_real_train_dialogue_examples_and_commas(ed_dir: Path) -> None:
    rows = read_split(ed_dir / "train.csv")
    assert len(build_examples(rows, "dialogue")) == 40_270
    assert len(build_examples(rows, "seed")) == 84_204
    first = rows[0]
    assert first.conv_id == "hit:0_conv:1" and first.emotion == "sentimental"
    assert "people, but it only felt like us" in first.situation
    assert not any("_comma_" in r.utterance or "_comma_" in r.situation for r in rows)


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def _row(conv: int, idx: int, text: str) -> str:
    return f"c{conv},{idx},sad,my situation_comma_ today,{(idx + 1) % 2},{text},,"


def test_stray_quotes_and_extra_fields_are_tolerated(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(0, 1, 'she said "hi'), _row(0, 2, "oh no") + ",extra,fields"])
    rows = read_split(path)
    assert [r.utterance for r in rows] == ['she said "hi', "oh no"]
    assert rows[0].situation == "my situation, today"


def test_malformed_lines_are_counted_with_first_line_number(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = [_row(i, 1, f"text {i}") for i in range(300)]
    path = _write(tmp_path, good[:10] + ["broken,line"] + good[10:] + ["c9,notanumber,sad,x,0,y,,"])
    with caplog.at_level(logging.WARNING):
        rows = read_split(path)
    assert len(rows) == 300
    assert "skipped 2 malformed line(s), the first at line 12" in caplog.text


def test_too_many_malformed_lines_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(0, 1, "fine"), "broken", "also,broken"])
    with pytest.raises(UserError, match=r"train\.csv: 2 of 3 lines are malformed"):
        read_split(path)


def test_dialogue_examples_have_roles_and_history(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(0, i, f"turn {i}") for i in range(1, 6)])
    examples = build_examples(read_split(path), "dialogue")
    assert [e.target for e in examples] == ["turn 2", "turn 4"]
    assert [(t.role, t.text) for t in examples[1].context] == [
        ("speaker", "turn 1"), ("listener", "turn 2"), ("speaker", "turn 3")
    ]
