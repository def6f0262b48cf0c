"""What a serving stack needs to prompt an export and stop its replies as chat does, in the files
those stacks read: the tokenizer with this project's chat template (`tokenizer_config.json`'s
`chat_template`, and `chat_template.jinja` for a `--chat-template` flag) and `generation_config.json`
(chat's defaults: greedy, 64 new tokens, eos, and the turn markers as stop strings).

The template is generated from the conversation format (`conversation.chat_template`), never
written here. `stop_strings` make transformers' `generate` ask for the tokenizer
(`generate(..., tokenizer=tokenizer)`); vLLM and TGI read eos from `generation_config.json` but
take stop strings only per request (`"stop"`).
"""

from __future__ import annotations

from pathlib import Path

from transformers import GenerationConfig, PreTrainedTokenizerBase

from empathic_lora.conversation import Formatter, chat_template
from empathic_lora.lm.decoding import GenerationSettings

TEMPLATE_FILE = "chat_template.jinja"  # where transformers >= 4.50 itself saves a template


def generation_config(tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """The decoding chat uses by default, so that a plain `generate` stops where chat stops."""
    config = GenerationSettings().generation_config(tokenizer)
    config.bos_token_id = tokenizer.bos_token_id
    return config


def write(tokenizer: PreTrainedTokenizerBase, history_turns: int | None, directory: Path) -> str:
    """Save `tokenizer` with the chat template, and generation_config.json, into `directory`;
    returns the template."""
    template = chat_template(Formatter(tokenizer, history_turns))
    tokenizer.chat_template = template
    # In tokenizer_config.json, where every tool looks (TGI and llama.cpp's GGUF converter read only
    # that); transformers 5 would otherwise move it into chat_template.jinja alone.
    tokenizer.save_pretrained(directory, save_jinja_files=False)
    (directory / TEMPLATE_FILE).write_text(template, encoding="utf-8")
    generation_config(tokenizer).save_pretrained(directory)
    return template
