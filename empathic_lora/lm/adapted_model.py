"""The model a run trains: a pretrained base, frozen, under a PEFT adapter.

`build` runs the named steps below, in this order (each says why it exists). Training
(`train/lora_module.py`) and loading a trained model for chat, serve and export
(`session/trained_model.py`) both build it here, so a checkpoint is loaded into exactly the model
that trained it, without Lightning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftConfig, PeftModel
from peft.utils import get_peft_model_state_dict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from empathic_lora.errors import UserError
from empathic_lora.lm import adapters, emotion_classifier, pretrained, quantized_base, supervised_lm_head

log = logging.getLogger(__name__)


@dataclass
class AdaptedModel:
    """A base under its adapter, and what checkpoints, export and chat need to know of it."""

    tokenizer: PreTrainedTokenizerBase
    model: PeftModel
    peft_config: PeftConfig
    base_signature: dict[str, Any]  # recorded in every checkpoint: it never loads onto another base
    initial_adapter: dict[str, torch.Tensor] | None  # PiSSA's starting adapter (see `initial_adapter`)
    emotion_head: torch.nn.Linear | None

    def trainable_state_keys(self) -> set[str]:
        """The state-dict keys a checkpoint holds: the adapter's and the emotion head's, with the
        prefixes of their attributes in the LightningModule (`model.`, `emotion_head.`)."""
        keys = {f"model.{name}" for name, p in self.model.named_parameters() if p.requires_grad}
        if self.emotion_head is not None:
            keys |= {f"emotion_head.{name}" for name, _ in self.emotion_head.named_parameters()}
        return keys


def build(
    base_model: str, gguf_file: str | None, random_init: bool, init_seed: int, dtype: pretrained.DType,
    peft: PeftConfig | dict[str, Any] | None, shorthand: dict[str, Any], defaults: dict[str, Any], emotion_head: bool,
    quantize: quantized_base.Quantize = "none",
) -> AdaptedModel:
    """The steps below, in order (the random draws of LoRA's and the head's initialisation follow it)."""
    tokenizer, backbone = load_base(base_model, gguf_file, random_init, init_seed, dtype)
    config = adapter_config(peft, backbone, shorthand, defaults)
    flag = "--model.peft.init_args.target_modules" if peft is not None else "--model.target_modules"
    model, signature = attach_adapter(backbone, config, tokenizer, flag)
    quantized_base.quantize_base(model, quantize)  # after the signature: it is the float base's
    head = emotion_classifier.build_head(backbone.config.hidden_size) if emotion_head else None
    return AdaptedModel(tokenizer, model, config, signature, initial_adapter(model, config), head)


def load_base(
    base_model: str, gguf_file: str | None, random_init: bool, init_seed: int, dtype: pretrained.DType
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The tokenizer and the pretrained (or, `random_init`, freshly drawn) base model."""
    return pretrained.load_tokenizer(base_model, gguf_file), pretrained.load_model(base_model, gguf_file, random_init, init_seed, dtype)


def adapter_config(
    peft: PeftConfig | dict[str, Any] | None, backbone: PreTrainedModel, shorthand: dict[str, Any], defaults: dict[str, Any]
) -> PeftConfig:
    """The run's adapter: `peft` when given, else the LoRA of the flat flags in `shorthand`, whose
    `target_modules: null` means the architecture's usual projections (`c_attn`, `q_proj`/`v_proj`)."""
    if peft is None and shorthand["target_modules"] is None:
        shorthand = {**shorthand, "target_modules": pretrained.default_target_modules(backbone)}
    return adapters.resolve(peft, shorthand, defaults)


def attach_adapter(
    backbone: PreTrainedModel, config: PeftConfig, tokenizer: PreTrainedTokenizerBase, flag: str
) -> tuple[PeftModel, dict[str, Any]]:
    """The base wrapped in its adapter (base frozen), and the base's signature, which every
    checkpoint records so that it never loads onto another base. `flag` names the target modules
    in the error when none match."""
    return adapters.wrap(backbone, config, lambda wrapped: pretrained.signature(wrapped, tokenizer), flag)


def initial_adapter(model: PeftModel, config: PeftConfig) -> dict[str, torch.Tensor] | None:
    """A copy of the adapter as initialised, for methods that rewrite the base when they start
    (PiSSA): export subtracts it to hand out a plain LoRA of the original base. None otherwise."""
    if not adapters.mutates_base(config):
        return None
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def prepare_for_training(model: PeftModel, gradient_checkpointing: bool) -> None:
    """Train mode for the whole model, and gradient checkpointing when asked.

    One rule for every load path: the whole model, frozen base included, trains in train mode (its
    own dropout on) like the reference notebook's Hugging Face Trainer, which calls model.train().
    `from_pretrained` (Hub, local, GGUF) returns eval mode and `from_config` train mode, and
    Lightning keeps whatever mode a submodule is in; evaluation, generation and chat switch to
    eval mode themselves.
    """
    model.train()
    if gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad, which a frozen embedding
        # never gives (the reentrant kind would silently compute no LoRA gradients).
        model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def lm_head(model: PeftModel, config: PeftConfig) -> supervised_lm_head.Transform | None:
    """The LM head applied only at supervised positions (`supervised_lm_head.py`), or None where
    the model's own full forward must run: prompt tuning prepends its virtual tokens inside PEFT's
    forward, and some architectures transform their logits in ways not shown equal."""
    if adapters.prepends_virtual_tokens(model):
        log.info("%s: training with the full forward (logits at every position), because PEFT prepends its "
                 "virtual tokens inside its own forward", config.peft_type.value)
        return None
    return supervised_lm_head.supervised_head(model.get_base_model())


def check_zero_shot(zero_shot: bool, initial: dict[str, torch.Tensor] | None, config: PeftConfig) -> None:
    """Zero-shot evaluation switches the adapter off, which gives back the base only if the
    adapter's initialisation left the base's weights alone."""
    if zero_shot and initial is not None:
        raise UserError(
            f"--model.zero_shot: init_lora_weights {config.init_lora_weights} rewrote the base's weights, "
            "so switching the adapter off is not the base model; evaluate zero-shot without --model.peft"
        )
