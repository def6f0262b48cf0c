"""The loaded base model computes what the original architecture computes."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM
from transformers.activations import NewGELUActivation

from empathic_lora import base
from empathic_lora.builtin import TINY_GPT2


def test_fused_gelu_base_matches_the_original_architecture() -> None:
    fused = base.load_model(TINY_GPT2).eval()
    assert not any(isinstance(module, NewGELUActivation) for module in fused.modules())
    assert fused.config.activation_function == "gelu_new"  # what an export writes stays the original

    original = AutoModelForCausalLM.from_config(fused.config).eval()
    assert any(isinstance(module, NewGELUActivation) for module in original.modules())
    original.load_state_dict(fused.state_dict())
    ids = torch.randint(0, fused.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(fused(input_ids=ids).logits, original(input_ids=ids).logits, atol=1e-5)
