"""The reference notebook's recipe, written the way it is commonly written: the peer to beat.

A plain Hugging Face `Trainer` with a PEFT LoRA adapter (r 8, alpha 32, `c_attn`, dropout 0.05),
every example tokenized to `max_length` with `padding="max_length"`, labels made by
`DataCollatorForLanguageModeling(mlm=False)` (a copy of the input ids, padding ignored), the
model's own loss over logits at every position, batch 8, lr 3e-4 and the Trainer's defaults for
everything else. Nothing here is slowed down on purpose: it is what a user of the notebook runs.

Only the example source is shared with the project (`render` writes exactly the notebook's
`"<|prompt|> {prompt} <|response|> {utterance}"` for a `seed` example), so that both sides train
on the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from empathic_lora.conversation import Turn, render
from empathic_lora.errors import UserError

# (context, reply): plain data, so that this process need not import the project's DataModule.
Dialogue = tuple[Sequence[Turn], str]

PRECISION_FLAGS = {"32-true": {}, "16-mixed": {"fp16": True}, "bf16-mixed": {"bf16": True}}


def notebook_text(dialogue: Dialogue, eos_token: str) -> str:
    """`<|prompt|> {prompt} <|response|> {utterance} <|endoftext|>`; in the `dialogue` format the
    whole conversation so far stands before the reply (the notebook has no history window; its
    right truncation at `max_length` is what bounds it)."""
    context, reply = dialogue
    return f"{render(context, reply)} {eos_token}"


def load_tokenizer(model_dir: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenized_dataset(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
    def tokenize(batch: dict[str, list[str]]) -> dict[str, Any]:
        return tokenizer(batch["text"], truncation=True, padding="max_length", max_length=max_length)

    return Dataset.from_dict({"text": list(texts)}).map(tokenize, batched=True, remove_columns=["text"])


def lora_model(model_dir: str, random_init: bool, seed: int) -> torch.nn.Module:
    if random_init:  # an architecture-only directory: fresh weights from the seed
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(r=8, lora_alpha=32, target_modules=["c_attn"], lora_dropout=0.05, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def build_trainer(
    model_dir: str,
    dialogues: Sequence[Dialogue],
    *,
    random_init: bool,
    max_length: int,
    batch_size: int,
    precision: str,
    max_steps: int,
    output_dir: str | Path,
    seed: int = 0,
    callbacks: Sequence[TrainerCallback] = (),
    trainer_class: type[Trainer] = Trainer,
) -> Trainer:
    """The notebook's Trainer on `dialogues`; `trainer_class` and `callbacks` only observe it."""
    if precision not in PRECISION_FLAGS:
        raise UserError(f"--precision {precision}: the recipe runs {', '.join(PRECISION_FLAGS)}")
    tokenizer = load_tokenizer(model_dir)
    dataset = tokenized_dataset([notebook_text(d, tokenizer.eos_token) for d in dialogues], tokenizer, max_length)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        learning_rate=3e-4,
        max_steps=max_steps,
        seed=seed,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **PRECISION_FLAGS[precision],
    )
    return trainer_class(
        model=lora_model(model_dir, random_init, seed),
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=list(callbacks),
    )
