"""Other base-model families train correctly: the supervised-only head equals each model's own loss
(or falls back to it), a BOS token is added where the family uses one, and the loading options work."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from tokenizers import processors
from transformers import Gemma2Config, GPT2Config, LlamaConfig, PretrainedConfig

from empathic_lora.conversation import Formatter, Turn
from empathic_lora.data.datamodule import Collator
from empathic_lora.lm import pretrained, supervised_lm_head
from empathic_lora.lm.builtin_models import TINY_GPT2
from empathic_lora.train.lora_module import EmpatheticLoRAModule

SMALL = {"vocab_size": 1100, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256}
FAMILIES: dict[str, PretrainedConfig] = {
    "gpt2": GPT2Config(vocab_size=1100, n_positions=256, n_embd=64, n_layer=2, n_head=4),
    "llama": LlamaConfig(**SMALL),
    # A cap this low changes every logit: the head must apply it, or the loss would differ.
    "gemma2": Gemma2Config(**SMALL, final_logit_softcapping=0.5, query_pre_attn_scalar=16),
}


def _base_dir(root: Path, config: PretrainedConfig) -> str:
    """An architecture-only directory: the family's config with the tiny model's tokenizer."""
    directory = root / config.model_type
    pretrained.load_tokenizer(TINY_GPT2).save_pretrained(directory)
    config.save_pretrained(directory)
    return str(directory)


def _batch(module: EmpatheticLoRAModule) -> dict[str, torch.Tensor]:
    formatter = Formatter(module.tokenizer, history_turns=4)
    contexts = [[Turn("speaker", "I lost my job today.")], [Turn("speaker", "My sister is visiting!"),
                                                            Turn("listener", "How lovely."), Turn("speaker", "Yes.")]]
    ids, prompts = formatter.encode_examples(contexts, ["I am so sorry.", "Enjoy the time together."], max_length=64)
    return Collator(pad_id=module.tokenizer.eos_token_id)(
        [{"input_ids": i, "prompt_length": p} for i, p in zip(ids, prompts)])


def _with_lora_values(module: EmpatheticLoRAModule) -> EmpatheticLoRAModule:
    with torch.no_grad():  # lora_B starts at zero: give the adapter an effect to compare
        for name, parameter in module.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    return module.eval()  # no dropout: both losses see the same network


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("family", FAMILIES)
def test_the_training_loss_is_the_models_own_loss(tmp_path: Path, family: str) -> None:
    module = _with_lora_values(EmpatheticLoRAModule(_base_dir(tmp_path, FAMILIES[family]), random_init=True,
                                                    target_modules="all-linear", num_generation_samples=0))
    assert module.supervised_head is not None  # the fast path is kept for every one of these families
    batch = _batch(module)
    own = module.model(**batch).loss  # transformers' loss over the full logits, after the family's own forward
    torch.testing.assert_close(module.training_step(batch, 0), own, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_an_unknown_post_processing_falls_back_to_the_full_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervised_lm_head, "_known_transform", lambda config: (lambda logits: logits))  # as if softcapping were new
    with caplog.at_level(logging.INFO, logger="empathic_lora.lm.supervised_lm_head"):
        module = _with_lora_values(EmpatheticLoRAModule(_base_dir(tmp_path, FAMILIES["gemma2"]), random_init=True,
                                                        num_generation_samples=0))
    assert module.supervised_head is None
    assert "training with the model's full forward" in caplog.text and "changes lm_head's logits" in caplog.text
    batch = _batch(module)
    torch.testing.assert_close(module.training_step(batch, 0), module.model(**batch).loss, atol=1e-5, rtol=0)


def _tokenizer_with_bos():
    """The tiny tokenizer made to put a BOS before text by default, as Llama 3's and Gemma's do."""
    tokenizer = pretrained.load_tokenizer(TINY_GPT2)
    tokenizer.add_special_tokens({"bos_token": "<bos>"})
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    assert tokenizer("hi")["input_ids"][0] == bos
    return tokenizer


def test_a_bos_family_gets_one_bos_at_the_start_of_every_example_and_prompt() -> None:
    tokenizer = _tokenizer_with_bos()
    formatter = Formatter(tokenizer, history_turns=2)
    turns = [Turn("speaker", "one " * 40), Turn("listener", "two " * 40), Turn("speaker", "three " * 40)]
    for max_tokens in (200, 40):  # with and without the context cut from the left
        prompt = formatter.encode_prompt(turns, max_tokens)
        assert prompt[0] == tokenizer.bos_token_id and prompt.count(tokenizer.bos_token_id) == 1
        assert len(prompt) <= max_tokens
    (example,), (prompt_length,) = formatter.encode_examples([turns], ["I see."], max_length=48)
    assert example[0] == tokenizer.bos_token_id and example.count(tokenizer.bos_token_id) == 1
    assert len(example) <= 48 and prompt_length > 1


def test_gpt2_gets_no_bos(distilgpt2_dir: Path) -> None:
    tokenizer = pretrained.load_tokenizer(str(distilgpt2_dir))
    formatter = Formatter(tokenizer)
    assert formatter.bos_ids == []
    prompt = formatter.encode_prompt([Turn("speaker", "hello")], 64)
    assert tokenizer.decode(prompt) == " <|prompt|> hello <|response|>"


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_half_precision_base_keeps_a_float32_adapter(tmp_path: Path) -> None:
    module = EmpatheticLoRAModule(_base_dir(tmp_path, FAMILIES["llama"]), random_init=True, dtype="bfloat16",
                                  num_generation_samples=0)
    dtypes = {name: p.dtype for name, p in module.model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    loss = module.training_step(_batch(module), 0)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in module.model.parameters() if p.requires_grad)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_gradient_checkpointing_gives_the_same_gradients(tmp_path: Path) -> None:
    directory = _base_dir(tmp_path, FAMILIES["llama"])
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same LoRA initialisation for both
        module = _with_lora_values(EmpatheticLoRAModule(directory, random_init=True, gradient_checkpointing=checkpointing,
                                                        num_generation_samples=0)).train()
        torch.manual_seed(0)
        module.training_step(_batch(module), 0).backward()
        grads.append({n: p.grad for n, p in module.model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize(("targets", "adapted"), [
    ("all-linear", {"c_attn", "c_proj", "c_fc"}),
    (r".*\.attn\.c_attn", {"c_attn"}),
    (["c_fc"], {"c_fc"}),
])
def test_target_modules_take_peft_string_forms(targets: str | list[str], adapted: set[str]) -> None:
    module = EmpatheticLoRAModule(TINY_GPT2, target_modules=targets, num_generation_samples=0)
    names = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in module.model.named_parameters() if ".lora_A" in name}
    assert names == adapted

