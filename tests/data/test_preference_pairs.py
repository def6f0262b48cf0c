"""Preference pairs: TRL's format read and written by one reader and one writer, loadable by
`datasets` with TRL's columns, and the EmPO-style pairs of opposite valence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from empathic_lora.conversation import Turn
from empathic_lora.data import preference_pairs
from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.data.emotion_labels import EMOTIONS
from empathic_lora.data.preference_pairs import EMOTION_GROUPS, GROUP_OF, Pair, opposite_emotion_pairs, read, write
from empathic_lora.errors import UserError

text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
roles = st.sampled_from(["speaker", "listener"])


@st.composite
def pairs(draw: st.DrawFn) -> Pair:
    turns = draw(st.lists(st.builds(Turn, roles, text), max_size=4))
    return Pair(tuple(turns) + (Turn("speaker", draw(text)),), draw(text), draw(text))


@settings(max_examples=40, deadline=None)
@given(st.lists(pairs(), min_size=1, max_size=5))
def test_pairs_round_trip(tmp_path_factory: pytest.TempPathFactory, written: list[Pair]) -> None:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    write(path, written)
    assert read(path) == written


def test_the_file_is_trls_conversational_preference_format(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    context = (Turn("speaker", "My dog died."), Turn("listener", "Oh no."), Turn("speaker", "He was 14."))
    write(path, [Pair(context, "That is a long life, I'm sorry.", "Congratulations!")])
    table = load_dataset("json", data_files=str(path), split="train")
    assert table.column_names == ["prompt", "chosen", "rejected"]
    assert table[0]["prompt"] == [{"role": "user", "content": "My dog died."}, {"role": "assistant", "content": "Oh no."},
                                  {"role": "user", "content": "He was 14."}]
    assert table[0]["chosen"] == [{"role": "assistant", "content": "That is a long life, I'm sorry."}]
    assert table[0]["rejected"] == [{"role": "assistant", "content": "Congratulations!"}]


def test_trls_standard_string_form_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "I lost my job.", "chosen": "That's hard.", "rejected": "Great!"}) + "\n")
    assert read(path) == [Pair((Turn("speaker", "I lost my job."),), "That's hard.", "Great!")]


@pytest.mark.parametrize(("line", "needle"), [
    ("not json", ":1: not JSON"),
    ('{"prompt": [], "chosen": "a", "rejected": "b"}', "'prompt' must be a non-empty list"),
    ('{"prompt": "x", "chosen": "a"}', "'prompt', 'chosen' and 'rejected'"),
    ('{"prompt": [{"role": "system", "content": "x"}], "chosen": "a", "rejected": "b"}', "a role of user or assistant"),
    ('{"prompt": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "chosen": "a", "rejected": "b"}',
     "must end with the user's"),
    ('{"prompt": "x", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}', "'chosen' must be one assistant message"),
])
def test_bad_lines_are_named(tmp_path: Path, line: str, needle: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(UserError, match="pairs.jsonl:1: " if "JSON" not in needle else "pairs.jsonl") as error:
        read(path)
    assert needle in str(error.value)


def test_writing_never_replaces_a_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("mine\n")
    pair = Pair((Turn("speaker", "hi"),), "a", "b")
    with pytest.raises(UserError, match="exists; pass --force"):
        write(path, [pair])
    assert path.read_text() == "mine\n"
    write(path, [pair], force=True)
    assert read(path) == [pair]


def test_every_label_is_in_exactly_one_group() -> None:
    assert sorted(GROUP_OF) == sorted(EMOTIONS)
    assert sum(len(group) for group in EMOTION_GROUPS.values()) == len(EMOTIONS)


def test_opposite_emotion_pairs_reject_a_reply_of_the_opposite_valence() -> None:
    examples = EmpatheticDialoguesDataModule("builtin:sample").examples("train")
    built = opposite_emotion_pairs(examples, seed=0)
    valence_of_reply = {e.target: GROUP_OF[e.emotion] for e in examples}
    by_context = {tuple(e.context): e for e in examples}
    assert len(built) == sum(GROUP_OF[e.emotion] != "other" for e in examples)
    for pair in built:
        example = by_context[pair.context]
        assert pair.chosen == example.target
        assert {valence_of_reply[pair.rejected], GROUP_OF[example.emotion]} == {"positive", "negative"}
    assert opposite_emotion_pairs(examples, seed=0) == built != opposite_emotion_pairs(examples, seed=1)
    assert preference_pairs.OPPOSITE_EMOTION == "builtin:opposite-emotion"
