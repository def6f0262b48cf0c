"""Reply generation shared by chat and evaluation, so both decode exactly the same way."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextStreamer,
)

from empathic_lora.conversation import (
    MARKERS,
    Formatter,
    Turn,
    could_become_marker,
    extract_reply,
    first_marker,
)
from empathic_lora.lm import adapters

# Scores are divided by the temperature (and positive ones by the repetition penalty) in float32: a
# subnormal such as 2.2e-309 passes "> 0" yet makes them inf and sampling fail, so both have a floor far
# below any useful value (1e-6 already samples greedily in effect) and far above float32's overflow.
_FLOOR = 1e-6
# What each numeric setting accepts, for chat's flags and `--model.generation` alike: transformers
# checks few of these itself, and only once generation starts (after training, in evaluation).
_LIMITS: dict[str, tuple[Callable[[float], bool], str]] = {
    "max_new_tokens": (lambda v: v >= 1, ">= 1"),
    "temperature": (lambda v: v >= _FLOOR, f">= {_FLOOR:g}"),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "top_k": (lambda v: v >= 0, ">= 0"),
    "repetition_penalty": (lambda v: v >= _FLOOR, f">= {_FLOOR:g}"),
    "no_repeat_ngram_size": (lambda v: v >= 0, ">= 0"),
    "num_beams": (lambda v: v >= 1, ">= 1"),
}


def setting_problem(name: str, value: object) -> str | None:
    """Why `value` is no valid `name` setting ("must be > 0, got 0"), or None when it is."""
    if name not in _LIMITS:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, got {value!r}"
    if not math.isfinite(value):  # JSON bodies may carry Infinity and NaN, which every comparison below mishandles
        return f"must be a finite number, got {value}"
    accepts, rule = _LIMITS[name]
    return None if accepts(value) else f"must be {rule}, got {value}"


@dataclass
class GenerationSettings:
    """Decoding settings; the defaults (greedy, 64 new tokens) are chat's and evaluation's.

    Raises ValueError naming the setting when a value is out of range (see `setting_problem`).
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in _LIMITS:
            problem = setting_problem(name, getattr(self, name))
            if problem:
                raise ValueError(f"{name} {problem}")

    def generation_config(self, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
        settings = asdict(self)
        settings.pop("seed")
        if not self.do_sample:  # sampling knobs would only trigger "unused flag" warnings
            for knob in ("temperature", "top_p", "top_k"):
                settings.pop(knob)
        return GenerationConfig(
            **settings,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            # The turn markers are plain text; a new one means the reply is over.
            stop_strings=list(MARKERS),
            use_cache=True,
        )


def context_window(model: PreTrainedModel) -> int:
    """How many tokens the model attends over (prompt plus reply)."""
    config = model.config
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return 2048


def prompt_budget(model: PreTrainedModel, settings: GenerationSettings) -> int:
    """Prompt tokens that fit the model's context together with the reply (and prompt tuning's
    virtual tokens, which PEFT puts before the prompt)."""
    return context_window(model) - settings.max_new_tokens - adapters.virtual_tokens(model)


@torch.inference_mode()
def _generate(
    model: PreTrainedModel,
    formatter: Formatter,
    contexts: Sequence[Sequence[Turn]],
    settings: GenerationSettings,
    streamer: TextStreamer | None = None,
    stopping: StoppingCriteria | None = None,
) -> tuple[torch.Tensor, int]:
    """The contexts' prompts as one left-padded batch, generated with the KV cache; returns the
    output ids and the padded prompt width (where the replies start).

    Prompts are encoded by the same `Formatter` as training data, left-truncated to fit the
    model's context together with `max_new_tokens`.
    """
    tokenizer = formatter.tokenizer
    prompts = [formatter.encode_prompt(turns, prompt_budget(model, settings)) for turns in contexts]
    longest = max(len(p) for p in prompts)
    device = next(model.parameters()).device
    input_ids = torch.full((len(prompts), longest), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, prompt in enumerate(prompts):  # left padding: every prompt ends where generation starts
        input_ids[row, longest - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, longest - len(prompt) :] = 1
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        generation_config=settings.generation_config(tokenizer),
        tokenizer=tokenizer,
        streamer=streamer,
        stopping_criteria=StoppingCriteriaList([stopping]) if stopping else None,
    )
    return output, longest


def generate_replies(
    model: PreTrainedModel,
    formatter: Formatter,
    contexts: Sequence[Sequence[Turn]],
    settings: GenerationSettings,
) -> list[str]:
    """One reply per context, generated as one batch (see `_generate`), or one at a time for prompt
    tuning: PEFT drops the position ids there, which left padding needs (a padded prompt would be
    shifted along the positions and answered differently)."""
    if len(contexts) > 1 and adapters.virtual_tokens(model):
        return [reply for turns in contexts for reply in generate_replies(model, formatter, [turns], settings)]
    output, width = _generate(model, formatter, contexts, settings)
    texts = formatter.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return [extract_reply(text) for text in texts]


# Bidirectional overrides reorder what a terminal shows ("trojan source"); they are not controls (Cc).
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """`text` safe to write to a terminal: line breaks and tabs become spaces, other control
    characters (ESC starts every terminal escape sequence) and bidirectional overrides are dropped.

    Character by character, so a stream of pieces cleans to the same text as the whole.
    """
    return "".join(
        " " if char in "\t\n\r\v\f" else char
        for char in text
        if char in "\t\n\r\v\f" or (unicodedata.category(char) != "Cc" and char not in _BIDI_CONTROLS)
    )


class _ReplyStreamer(TextStreamer):
    """transformers' word-by-word decoding, shown as a reply: printable, cut at the first marker,
    whitespace-stripped, and holding back text that may yet become a marker."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, on_text: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text
        self.text = ""
        self.reply = ""

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text += text
        clean = printable(self.text)
        cut = first_marker(clean)
        if cut is None:
            cut = len(clean) - (0 if stream_end else could_become_marker(clean))
        # Trailing whitespace waits for more text: the reply is stripped, the stream must match it.
        shown = clean[:cut].strip()
        if len(shown) > len(self.reply):
            self.on_text(shown[len(self.reply) :])
            self.reply = shown


def stream_reply(
    model: PreTrainedModel,
    formatter: Formatter,
    turns: Sequence[Turn],
    settings: GenerationSettings,
    on_text: Callable[[str], None],
    stopping: StoppingCriteria | None = None,
) -> str:
    """One reply to `turns`, handed to `on_text` piece by piece while it is generated; returns it.

    The prompt, decoding and stopping are those of `generate_replies`. The pieces are printable
    (see `printable`), never hold a marker or the surrounding whitespace, and join to the returned
    reply. Beam search cannot stream in transformers: its reply arrives as one piece. `stopping`
    is asked after every token whether to stop early (a server stops when its client has left).
    """
    streamer = _ReplyStreamer(formatter.tokenizer, on_text)
    beams = settings.num_beams > 1
    output, width = _generate(model, formatter, [turns], settings, None if beams else streamer, stopping)
    if beams:
        streamer.put(output[0, :width].cpu())  # skipped, as a prompt
        streamer.put(output[0, width:].cpu())
        streamer.end()
    return streamer.reply
