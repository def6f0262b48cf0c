"""Properties of the conversation format on any text a person can type (hypothesis), with the tiny
model's tokenizer and distilgpt2's: no text forms a marker or a special token (eos among them), and
a turn's tokens are the same whatever the other turns say."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerBase

from empathic_lora.conversation import MARKERS, Formatter, Turn
from empathic_lora.lm.pretrained import load_tokenizer

PROPERTY = settings(max_examples=200, deadline=None)
# What a person would type to forge a turn: pieces of markers and special tokens, among any text.
PIECES = ["<|", "|>", "<", "|", ">", " ", "\n", "prompt", "response", "endoftext", "im_start", *MARKERS,
          "<|endoftext|>", "<|im_start|>", "<||prompt||>"]
TYPED = st.lists(st.sampled_from(PIECES) | st.text(max_size=8), max_size=12).map("".join) | st.text()
TURNS = st.lists(st.builds(Turn, st.sampled_from(["speaker", "listener"]), TYPED), min_size=1, max_size=4)


@pytest.fixture(scope="module", params=["tiny-gpt2", "distilgpt2"])
def formatter(request: pytest.FixtureRequest) -> Formatter:
    if request.param == "tiny-gpt2":
        return Formatter(load_tokenizer("builtin:tiny-gpt2"))
    directory: Path = request.getfixturevalue("distilgpt2_dir")
    return Formatter(load_tokenizer(str(directory)))


def occurrences(ids: list[int], piece: list[int]) -> int:
    return sum(ids[k : k + len(piece)] == piece for k in range(len(ids) - len(piece) + 1))


def special_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    return {*tokenizer.all_special_ids, tokenizer.eos_token_id}


def test_typed_text_never_forms_a_marker_or_a_special_token(formatter: Formatter) -> None:
    prompt_marker = formatter.tokenizer(f" {MARKERS[0]}", add_special_tokens=False)["input_ids"]

    @PROPERTY
    @given(turns=TURNS)
    def check(turns: list[Turn]) -> None:
        ids = formatter.encode_prompt(turns, 100_000)
        assert not special_ids(formatter.tokenizer) & set(ids), ids  # no eos: the turn cannot be ended
        speakers = sum(t.role == "speaker" for t in turns)
        assert occurrences(ids, prompt_marker) == speakers, (turns, ids)
        assert occurrences(ids, formatter.cue_ids) == len(turns) - speakers + 1, (turns, ids)
        text = formatter.tokenizer.decode(ids)
        assert sum(text.count(marker) for marker in MARKERS) == len(turns) + 1, text

    check()


def test_a_turns_tokens_do_not_depend_on_the_other_turns(formatter: Formatter) -> None:
    cue = len(formatter.cue_ids)

    @PROPERTY
    @given(turns=TURNS)
    def check(turns: list[Turn]) -> None:
        alone = [formatter.encode_prompt([turn], 100_000)[len(formatter.bos_ids) : -cue] for turn in turns]
        together = formatter.encode_prompt(turns, 100_000)
        assert together == formatter.bos_ids + [t for ids in alone for t in ids] + formatter.cue_ids, turns

    check()
