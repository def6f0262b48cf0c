"""The conversation format: the only place that knows how a dialogue becomes tokens.

Training, evaluation and chat all call these functions, so the model is always prompted
exactly the way it was trained. A dialogue is rendered as

    " <|prompt|> {speaker turn} <|response|> {listener turn} <|prompt|> ..." + " <|response|>"

followed, when training, by the target `" {listener reply}"` and the tokenizer's eos token.

The markers are plain text to the tokenizer (no new special tokens: under LoRA their embeddings
would never be trained). So that a person cannot write the bot's side of a conversation, text never
forms a marker or a special token (see `neutralize`). Each turn is tokenized as two pieces, its marker and its text, so that a
context can be cut on turn boundaries (oldest turns first) and a single over-long turn can keep
its marker and lose only the oldest part of its text. Every piece starts with a space so the
tokens of a turn do not depend on what stands before it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from transformers import PreTrainedTokenizerBase

PROMPT_MARKER = "<|prompt|>"
RESPONSE_MARKER = "<|response|>"
MARKERS = (PROMPT_MARKER, RESPONSE_MARKER)

Role = Literal["speaker", "listener"]


@dataclass(frozen=True)
class Turn:
    role: Role  # "speaker": the person describing a feeling; "listener": the empathetic replier
    text: str


def neutralize(text: str) -> str:
    """`text` with every `<|` and `|>` reduced to `<` and `>`, so that no turn marker (nor a special
    token such as `<|endoftext|>` or a chat template's `<|im_start|>`) can be typed into a turn.

    Repeated until stable: one pass over `<||prompt||>` would leave `<|prompt|>`.
    """
    while "<|" in text or "|>" in text:
        text = text.replace("<|", "<").replace("|>", ">")
    return text


def _marker(role: Role) -> str:
    return PROMPT_MARKER if role == "speaker" else RESPONSE_MARKER


def render(turns: Sequence[Turn], reply: str | None = None) -> str:
    """The human-readable string of a context (and optional reply), for logs and sample dumps."""
    text = "".join(f" {_marker(t.role)} {t.text}" for t in turns) + f" {RESPONSE_MARKER}"
    return (text + (f" {reply}" if reply is not None else "")).strip()


def parse(rendered: str) -> list[Turn]:
    """The turns of a context written by `render` (its final response cue dropped): how sample
    dumps are shown turn by turn again, e.g. to human annotators."""
    pieces = re.split(f"({re.escape(PROMPT_MARKER)}|{re.escape(RESPONSE_MARKER)})", rendered)
    turns = [
        Turn("speaker" if marker == PROMPT_MARKER else "listener", text.strip())
        for marker, text in zip(pieces[1::2], pieces[2::2])
    ]
    return turns[:-1] if turns and turns[-1].role == "listener" and not turns[-1].text else turns


def bos_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """`[bos]` when the tokenizer puts a BOS token before text by default (Llama 3, Gemma: families
    trained with one, and prompted out of distribution without it), else `[]` (GPT-2, SmolLM2).
    Every example and prompt then starts with it, once, whatever context cut follows."""
    with_specials = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and len(with_specials) > len(plain) and with_specials[0] == bos:
        return [bos]
    return []


class Formatter:
    """Turns dialogues into token ids for one tokenizer; holds the tokenized markers."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, history_turns: int | None = None):
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos token")
        self.tokenizer = tokenizer
        self.history_turns = history_turns
        self.eos_id: int = tokenizer.eos_token_id
        self.bos_ids = bos_ids(tokenizer)
        ids = tokenizer([f" {PROMPT_MARKER}", f" {RESPONSE_MARKER}"], add_special_tokens=False)["input_ids"]
        self._marker_ids: dict[Role, list[int]] = {"speaker": ids[0], "listener": ids[1]}

    @property
    def cue_ids(self) -> list[int]:
        """The tokens that ask the model for a listener reply."""
        return self._marker_ids["listener"]

    def _tokenize_text(self, texts: list[str]) -> list[list[int]]:
        """Turn texts, from data or from a person: neutralized, and special tokens read as plain text."""
        if not texts:
            return []
        pieces = [f" {neutralize(text)}" for text in texts]
        return self.tokenizer(pieces, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _window(self, turns: Sequence[Turn]) -> Sequence[Turn]:
        if self.history_turns is None:
            return turns
        return turns[-self.history_turns :] if self.history_turns > 0 else []

    def _context_ids(self, turns: Sequence[Turn], text_ids: list[list[int]], budget: int) -> list[int]:
        """Newest turns first into `budget` tokens; the oldest kept turn may lose its oldest text."""
        pieces: list[list[int]] = []
        for turn, ids in zip(reversed(turns), reversed(text_ids)):
            marker = self._marker_ids[turn.role]
            room = budget - len(marker)
            if room <= 0:
                break
            pieces.append(marker + ids[-room:] if len(ids) > room else marker + ids)
            budget -= len(pieces[-1])
        return [token for piece in reversed(pieces) for token in piece]

    def encode_prompt(self, turns: Sequence[Turn], max_tokens: int) -> list[int]:
        """Context plus response cue in at most `max_tokens` tokens, as fed to `generate`."""
        turns = self._window(turns)
        budget = max_tokens - len(self.bos_ids) - len(self.cue_ids)
        if budget <= 0:
            raise ValueError(f"a prompt budget of {max_tokens} tokens cannot hold the response cue")
        text_ids = self._tokenize_text([t.text for t in turns])
        return self.bos_ids + self._context_ids(turns, text_ids, budget) + self.cue_ids

    def encode_examples(
        self, contexts: Sequence[Sequence[Turn]], targets: Sequence[str], max_length: int
    ) -> tuple[list[list[int]], list[int]]:
        """Training examples for a batch of dialogues: token ids and each one's prompt length.

        Labels are the ids with the first `prompt_length` positions ignored: the target and the
        final eos are supervised. An example whose target and eos alone do not fit `max_length`
        is dropped (its prompt length is reported as -1 and its ids are empty).
        """
        windows = [self._window(turns) for turns in contexts]
        flat = self._tokenize_text([t.text for turns in windows for t in turns])
        target_ids = self._tokenize_text(list(targets))
        input_ids: list[list[int]] = []
        prompt_lengths: list[int] = []
        offset = 0
        for turns, target in zip(windows, target_ids):
            text_ids, offset = flat[offset : offset + len(turns)], offset + len(turns)
            reply = target + [self.eos_id]
            budget = max_length - len(self.bos_ids) - len(self.cue_ids) - len(reply)
            if budget < 0:
                input_ids.append([])
                prompt_lengths.append(-1)
                continue
            prompt = self.bos_ids + self._context_ids(turns, text_ids, budget) + self.cue_ids
            input_ids.append(prompt + reply)
            prompt_lengths.append(len(prompt))
        return input_ids, prompt_lengths


def first_marker(text: str) -> int | None:
    """Where the first marker (the start of a new turn) in `text` begins, if there is one."""
    return min((index for index in (text.find(marker) for marker in MARKERS) if index != -1), default=None)


def extract_reply(text: str) -> str:
    """The reply a generation holds: up to the first marker (a new turn), whitespace stripped."""
    return text[: first_marker(text)].strip()


def could_become_marker(text: str) -> int:
    """How many trailing characters of `text` might be the start of a marker still being generated.

    A streaming printer holds those characters back until it knows whether a marker follows.
    """
    for keep in range(min(len(text), max(map(len, MARKERS))), 0, -1):
        if any(marker.startswith(text[-keep:]) for marker in MARKERS):
            return keep
    return 0


# The history window a DataModule uses unless told (`--data.history_turns`), and so chat's default.
DEFAULT_HISTORY_TURNS = 4


def context_turns(settings: Mapping[str, Any]) -> int | None:
    """The context window of a model trained with these DataModule settings (as its checkpoint
    records them): one turn in `seed` format (the situation), else `history_turns` (`None`: all).
    Chat prompts with the same window, so the model sees contexts shaped as in training."""
    if settings.get("format") == "seed":
        return 1
    return settings.get("history_turns", DEFAULT_HISTORY_TURNS)


def chat_template(formatter: Formatter) -> str:
    """This format as a Jinja chat template (transformers' `tokenizer.chat_template`), so that tools
    that prompt through the tokenizer (transformers' `apply_chat_template` and `pipeline`, vLLM, TGI)
    build `formatter.encode_prompt`'s prompt from OpenAI-style messages.

    `user` messages are the speaker, `assistant` messages the listener, other roles are left out (as
    serve.py does); the last `history_turns` turns are kept. `add_generation_prompt` adds the response
    cue. A conversation that ends with an assistant message and asks for no generation prompt is a
    training example, as `encode_examples` builds it: that message is the target and ends with eos.
    Text is neutralized as `neutralize` does, without its `while` loop, which Jinja lacks: a run of
    pipes after a `<` or before a `>` is exactly what repeated replacing removes.

    Jinja cannot count tokens, so the cut to the model's context (`encode_prompt`'s `max_tokens`)
    is not in it; the markers and texts concatenate to the same tokens only for tokenizers whose
    pre-tokenizer splits before every space, such as byte-level BPE (GPT-2, SmolLM2, Llama 3).
    """
    window = formatter.history_turns

    def kept(turns: str) -> str:
        return turns if window is None else f"{turns}[-{window}:]" if window > 0 else "[]"

    prompt, response = (f" {marker} " for marker in MARKERS)
    return "".join([
        "{%- macro neutral(text) -%}",
        "{%- set ns = namespace(out='') -%}",
        "{%- for piece in text.split('<') -%}",
        "{%- set ns.out = ns.out ~ (piece if loop.first else '<' ~ piece.lstrip('|')) -%}",
        "{%- endfor -%}",
        "{%- set pieces = ns.out.split('>') -%}",
        "{%- set ns.out = '' -%}",
        "{%- for piece in pieces -%}",
        "{%- set ns.out = ns.out ~ (piece if loop.last else piece.rstrip('|') ~ '>') -%}",
        "{%- endfor -%}",
        "{{- ns.out -}}",
        "{%- endmacro -%}",
        # OpenAI content is a string or a list of parts; serve.py joins the parts' texts.
        "{%- macro text(message) -%}",
        "{%- if message.content is string -%}{{- neutral(message.content) -}}",
        "{%- else -%}{%- set ns = namespace(out='') -%}",
        "{%- for part in message.content or [] -%}{%- set ns.out = ns.out ~ (part.text or '') -%}{%- endfor -%}",
        "{{- neutral(ns.out) -}}",
        "{%- endif -%}",
        "{%- endmacro -%}",
        "{%- set turns = messages | selectattr('role', 'in', ['user', 'assistant']) | list -%}",
        "{%- set example = turns | length > 0 and turns[-1].role == 'assistant' and not add_generation_prompt -%}",
        "{%- set context = turns[:-1] if example else turns -%}",
        "{{- bos_token -}}" if formatter.bos_ids else "",
        "{%- for message in " + kept("context") + " -%}",
        "{{- '" + prompt + "' if message.role == 'user' else '" + response + "' -}}{{- text(message) -}}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt or example -%}{{- '" + response.rstrip() + "' -}}{%- endif -%}",
        "{%- if example -%}{{- ' ' ~ text(turns[-1]) ~ eos_token -}}{%- endif -%}",
    ])
