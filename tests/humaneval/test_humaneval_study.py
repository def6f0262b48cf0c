"""The study model: pairing two runs' samples, attention checks, seeded order and sides, bad files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from humaneval_samples import rows, two_runs, write_samples

from empathic_lora.conversation import Turn, parse, render
from empathic_lora.errors import UserError
from empathic_lora.humaneval.study import build_study


def test_parse_inverts_render() -> None:
    turns = [Turn("speaker", "I lost my job <b>today</b>."), Turn("listener", "Oh no."), Turn("speaker", "Yes.")]
    assert parse(render(turns)) == turns
    assert parse(render([])) == []


def test_pairs_by_split_and_context_skipping_and_counting_the_rest(tmp_path: Path) -> None:
    a, b = two_runs(tmp_path, n=5)
    write_samples(a, rows(2, "A only {i}", start=100))           # contexts B never saw
    write_samples(b, rows(3, "B only {i}", start=200))
    study = build_study(a, b, attention_rate=0)
    assert [(item.a, item.b) for item in study.items] == [(f"A says sorry {i}", f"B says sorry {i}") for i in range(5)]
    assert study.skipped == {"a": 2, "b": 3}
    assert study.names == (str(a.parent), str(b.parent))


def test_a_run_is_named_by_its_file_its_run_directory_or_the_root_above_it(tmp_path: Path) -> None:
    a, b = two_runs(tmp_path / "runs", n=3)
    root = tmp_path / "root"
    older, newer = (root / "lightning_logs" / f"version_{n}" / "samples.jsonl" for n in (0, 1))
    write_samples(older, rows(3, "old {i}"))
    write_samples(newer, rows(3, "new {i}"))
    os.utime(older, (1, 1))  # the newest run is the one written last, whatever its number
    by_root = build_study(root, b, attention_rate=0)
    assert [item.a for item in by_root.items] == ["new 0", "new 1", "new 2"]
    assert by_root.names == (str(newer.parent), str(b.parent))
    by_dir = build_study(a.parent, b.parent, attention_rate=0)
    assert [(item.a, item.b) for item in by_dir.items] == [(item.a, item.b) for item in build_study(a, b, attention_rate=0).items]
    with pytest.raises(UserError, match=f"^--b {tmp_path}/empty/samples.jsonl: no such samples file"):
        (tmp_path / "empty").mkdir()
        build_study(a, tmp_path / "empty")


def test_only_the_newest_evaluation_is_judged(tmp_path: Path) -> None:
    """A run's file holds one evaluation per validation epoch: the study judges the newest one only
    (one model state), as the scorer scores it, never a mix of epochs or splits."""
    a, b = two_runs(tmp_path, n=2)
    write_samples(b, rows(1, "B val {i}", stage="val"))  # same context as B's test item 0, other split: newest
    later = rows(1, "A again {i}")
    later[0]["epoch"] = 1
    write_samples(a, later)
    with pytest.raises(UserError, match="share no context"):
        build_study(a, b, attention_rate=0)  # A's newest is test epoch 1, B's is val: nothing in common
    write_samples(b, rows(2, "B again {i}"))
    study = build_study(a, b, attention_rate=0)
    assert [(item.a, item.b) for item in study.items] == [("A again 0", "B again 0")]
    assert study.skipped == {"a": 0, "b": 1}


def test_attention_checks_pit_the_reference_against_a_broken_reply(tmp_path: Path) -> None:
    a, b = two_runs(tmp_path, n=9)
    short = rows(1, "A says sorry {i}")
    short[0]["reference"] = "You are so right."  # shuffled, still nearly fluent: never broken into a check
    write_samples(a, short)
    study = build_study(a, b, attention_rate=0.25)
    checks = [item for item in study.items if item.kind == "check"]
    assert len(checks) == 3  # 3 of 12 items: a quarter
    references = {r["context"]: r["reference"] for r in rows(9, "") + short}
    long_ones = [sorted(r.split()) for r in references.values() if r != short[0]["reference"]]
    for check in checks:
        assert check.a == references[check.context]
        assert sorted(check.b.split()) in long_ones and check.b not in references.values()  # another reply, shuffled
    assert len({item.id for item in study.items}) == len(study.items)
    assert build_study(a, b, attention_rate=0.01).items[-1].kind == "check"  # any rate above 0 gives one


def test_order_and_sides_are_seeded_per_annotator(tmp_path: Path) -> None:
    a, b = two_runs(tmp_path, n=40)
    study = build_study(a, b)
    again = build_study(a, b)
    assert [i.id for i in study.order("alice")] == [i.id for i in again.order("alice")]
    assert [i.id for i in study.order("alice")] != [i.id for i in study.order("bob")]
    assert sorted(i.id for i in study.order("bob")) == sorted(i.id for i in study.items)
    sides = [study.first("alice", item.id) for item in study.items]
    assert 10 < sides.count("a") < 34  # a fair coin per item, not one side for everything
    assert [study.first("bob", item.id) for item in study.items] != sides
    assert [build_study(a, b, seed=1).first("alice", item.id) for item in study.items] != sides


def test_fingerprint_follows_content_and_settings_not_paths(tmp_path: Path) -> None:
    a, b = two_runs(tmp_path / "one")
    moved_a, moved_b = two_runs(tmp_path / "two")
    assert build_study(a, b).fingerprint == build_study(moved_a, moved_b).fingerprint
    assert build_study(a, b).fingerprint != build_study(b, a).fingerprint
    assert build_study(a, b).fingerprint != build_study(a, b, questions=["Which is kinder?"]).fingerprint


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "no such samples file"),
        (b"", "holds no samples"),
        (b"\xff\xfe not utf-8\n", "not UTF-8"),
        (b"{not json\n", ":1: not JSON"),
        (json.dumps({"stage": "test", "context": "x", "reply": "y"}).encode() + b"\n", "not a samples line"),
        (json.dumps({"stage": "test", "emotion": "sad", "context": "x", "reference": "r", "reply": 3}).encode() + b"\n",
         ":1: not a samples line: expected a JSON object with string 'stage', 'emotion', 'context', 'reference', 'reply'"),
        (json.dumps({"stage": "test", "emotion": "sad", "context": "", "reference": "r", "reply": "y"}).encode() + b"\n",
         "an empty context"),
    ],
)
def test_a_bad_samples_file_is_one_error_naming_flag_and_file(tmp_path: Path, content: bytes | None, needle: str) -> None:
    _, b = two_runs(tmp_path)
    bad = tmp_path / "bad" / "samples.jsonl"
    if content is not None:
        bad.parent.mkdir()
        bad.write_bytes(content)
    with pytest.raises(UserError, match=needle) as error:
        build_study(bad, b)
    assert str(error.value).startswith(f"--a {bad}")


def test_no_shared_context_and_bad_settings_are_refused(tmp_path: Path) -> None:
    a, _ = two_runs(tmp_path)
    other = tmp_path / "other" / "samples.jsonl"
    write_samples(other, rows(3, "x {i}", start=50))
    with pytest.raises(UserError, match="share no context"):
        build_study(a, other)
    with pytest.raises(UserError, match="--attention-rate"):
        build_study(a, a, attention_rate=0.9)
    with pytest.raises(UserError, match="--question"):
        build_study(a, a, questions=["Same?", "Same?"])
