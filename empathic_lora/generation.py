"""Reply generation shared by chat and evaluation, so both decode exactly the same way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from empathic_lora.conversation import MARKERS, Formatter, Turn, extract_reply


@dataclass
class GenerationSettings:
    """Decoding settings; the defaults (greedy, 64 new tokens) are chat's and evaluation's."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    seed: int | None = None

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
    """Prompt tokens that fit the model's context together with the reply."""
    return context_window(model) - settings.max_new_tokens


@torch.inference_mode()
def generate_replies(
    model: PreTrainedModel,
    formatter: Formatter,
    contexts: Sequence[Sequence[Turn]],
    settings: GenerationSettings,
) -> list[str]:
    """One reply per context, generated as a left-padded batch with the KV cache.

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
    )
    texts = tokenizer.batch_decode(output[:, longest:], skip_special_tokens=True)
    return [extract_reply(text) for text in texts]
