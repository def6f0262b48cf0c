"""The LM head applied at supervised positions only, and when that equals the model's own forward.

Training needs logits only where a label is: applying the vocabulary projection there alone saves
about half a small model's FLOPs. That bypasses the causal LM's `forward`, which for some
architectures does more than `lm_head(hidden)`: Gemma 2 soft-caps the logits, Cohere and Granite
scale them, mixture-of-experts models add a router loss. `supervised_head` returns the head's
post-processing for the families it knows and then proves, on a few tokens, that the result equals
the model's own logits; where it cannot, training falls back to the full forward, with the reason
logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from transformers import PretrainedConfig, PreTrainedModel

log = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor], torch.Tensor]


def _known_transform(config: PretrainedConfig) -> Transform:
    """What the families transformers implements do to `lm_head`'s output in `forward`."""
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2 and 3
    scale = getattr(config, "logit_scale", None)  # Cohere
    divide = getattr(config, "logits_scaling", None)  # Granite

    def transform(logits: torch.Tensor) -> torch.Tensor:
        if cap:
            logits = torch.tanh(logits / cap) * cap
        if scale:
            logits = logits * scale
        if divide:
            logits = logits / divide
        return logits

    return transform


def supervised_head_problem(causal_lm: PreTrainedModel, transform: Transform) -> str | None:
    """Why `transform(lm_head(decoder(x)))` is not the model's own logits, or None when it is (on a
    short probe sequence, in eval mode so that dropout draws nothing)."""
    if getattr(causal_lm.config, "output_router_logits", False):
        return "its forward adds a router auxiliary loss"
    decoder = getattr(causal_lm, causal_lm.base_model_prefix, None)
    head = causal_lm.get_output_embeddings()
    if decoder is None or head is None:
        return "it has no separate decoder and LM head"
    probe = torch.arange(8, device=head.weight.device).unsqueeze(0) % causal_lm.config.vocab_size
    was_training = causal_lm.training
    causal_lm.eval()
    try:
        with torch.no_grad():
            expected = causal_lm(input_ids=probe).logits.float()
            ours = transform(head(decoder(input_ids=probe).last_hidden_state)).float()
    finally:
        causal_lm.train(was_training)
    if not torch.allclose(ours, expected, atol=1e-4, rtol=1e-4):
        return f"its forward changes lm_head's logits (max difference {(ours - expected).abs().max().item():.3g})"
    return None


def supervised_head(causal_lm: PreTrainedModel) -> Transform | None:
    """The post-processing that makes the supervised-only head exact for this model, or None when the
    full forward must be used (logged once, with the reason)."""
    transform = _known_transform(causal_lm.config)
    problem = supervised_head_problem(causal_lm, transform)
    if problem is None:
        return transform
    log.info("%s: training with the model's full forward (logits at every position), because %s",
             causal_lm.config.model_type, problem)
    return None
