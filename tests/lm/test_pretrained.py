"""The loaded base model computes what the original architecture computes, and a GGUF base is read once."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, modeling_utils
from transformers.activations import NewGELUActivation

from empathic_lora.lm import gguf_bases, pretrained
from empathic_lora.lm.builtin_models import TINY_GPT2


def test_fused_gelu_base_matches_the_original_architecture() -> None:
    fused = pretrained.load_model(TINY_GPT2).eval()
    assert not any(isinstance(module, NewGELUActivation) for module in fused.modules())
    assert fused.config.activation_function == "gelu_new"  # what an export writes stays the original

    original = AutoModelForCausalLM.from_config(fused.config).eval()
    assert any(isinstance(module, NewGELUActivation) for module in original.modules())
    original.load_state_dict(fused.state_dict())
    ids = torch.randint(0, fused.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(fused(input_ids=ids).logits, original(input_ids=ids).logits, atol=1e-5)


def test_a_local_gguf_base_is_converted_once_to_the_same_weights(smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first load converts the GGUF into the cache; later loads read the copy, which holds
    exactly the weights and vocabulary transformers' own GGUF load gives (so the base signature,
    and every checkpoint made on the GGUF before, still match)."""
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = pretrained.load_tokenizer(str(smollm2_dir), name)
    monkeypatch.setattr(gguf_bases, "convert", lambda *args: pytest.fail("the GGUF file was converted again"))
    model = pretrained.load_model(str(smollm2_dir), name)
    cached = gguf_bases.plain_directory(smollm2_dir / name)
    assert "quantization_config" not in json.loads((cached / "config.json").read_text())

    direct = AutoModelForCausalLM.from_pretrained(smollm2_dir, gguf_file=name, dtype=torch.float32)
    assert model.state_dict().keys() == direct.state_dict().keys()
    for key, value in direct.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    direct_tokenizer = AutoTokenizer.from_pretrained(smollm2_dir, gguf_file=name)
    assert tokenizer.get_vocab() == direct_tokenizer.get_vocab()
    assert pretrained.signature(model, tokenizer) == pretrained.signature(direct, direct_tokenizer)


def test_the_quantizer_marks_a_gguf_load_clears_are_still_transformers_own() -> None:
    """`pretrained._forget_gguf_quantization` clears these so that a dequantized GGUF base saves; a
    transformers release that renames them would leave the marks and break merged exports."""
    source = inspect.getsource(modeling_utils)
    missing = [name for name in pretrained.QUANTIZER_MARKS if name not in source]
    assert not missing, f"transformers' models no longer read {missing}: update lm/pretrained.py for this release"
