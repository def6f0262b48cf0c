"""The optional emotion head: the classifier over the 32 labels (`data/emotion_labels.py`) and its read-out.

With `--model.emotion_loss_weight W > 0` a linear layer reads the final hidden state at the
response cue (the last prompt token, where the model is about to answer) and is trained to name
the conversation's emotion label (the `context` column of the raw files) jointly with the replies:
loss = LM loss + W x cross-entropy(emotion). MoEL, CEM and CASE classify the same label from their
encoder's pooled context state (docs/metrics.md). Chat shows what the head reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torchmetrics import Metric
from transformers import PreTrainedModel

from empathic_lora.data.emotion_labels import EMOTIONS, check_labels
from empathic_lora.errors import UserError

HEAD_FILE = "emotion_head.safetensors"  # beside an exported adapter or merged model


def build_head(hidden_size: int) -> nn.Linear:
    """The classifier: float32 whatever the base's dtype, like the adapter's weights."""
    return nn.Linear(hidden_size, len(EMOTIONS), dtype=torch.float32)


def cue_positions(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Per row, the position of the last prompt token: the one whose next token is the first label."""
    supervised = labels[:, 1:] != ignore_index
    return supervised.int().argmax(dim=1)  # argmax returns the first maximum: the first label


def cue_states(hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The final hidden state at each row's response cue, float32, shape `(batch, hidden)`."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, cue_positions(labels).to(hidden.device)].float()


class MajorityClassRate(Metric):
    """The accuracy of always guessing the split's own most frequent label: the floor that an
    emotion accuracy is read against (about 5% on the EmpatheticDialogues test split).

    Hand-written because torchmetrics has no majority baseline; it counts the labels it is shown.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int = len(EMOTIONS), **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("counts", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, target: torch.Tensor) -> None:
        self.counts += torch.bincount(target.flatten(), minlength=self.num_classes).to(self.counts.device)

    def compute(self) -> torch.Tensor:
        return self.counts.max().double() / self.counts.sum().clamp(min=1)


@torch.no_grad()
def probabilities(model: PreTrainedModel, head: nn.Linear, prompt_ids: Sequence[int]) -> torch.Tensor:
    """The head's distribution over `EMOTIONS` for one prompt that ends with the response cue."""
    device = head.weight.device
    ids = torch.tensor([list(prompt_ids)], device=device)
    # The model's own forward, as training's for an adapter that prepends virtual tokens (prompt
    # tuning); the cue stays the last position. One logit is enough: only the hidden state is read.
    output = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True, logits_to_keep=1)
    return head(output.hidden_states[-1][0, -1].float()).softmax(dim=-1)


def read_out(probs: torch.Tensor, top: int = 2) -> str:
    """`(sounds: anxious 0.62, afraid 0.21)`: the `top` likeliest labels and their probabilities."""
    values, indices = probs.topk(top)
    return "(sounds: " + ", ".join(f"{EMOTIONS[i]} {v:.2f}" for v, i in zip(values.tolist(), indices.tolist())) + ")"


def save_head(head: nn.Linear, directory: Path) -> None:
    """The head's weights beside an exported adapter or merged model (`HEAD_FILE`)."""
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in head.state_dict().items()}, str(directory / HEAD_FILE))


def load_head(directory: Path, meta: dict[str, Any], hidden_size: int) -> nn.Linear | None:
    """The exported head of `directory` when its manifest `meta` records one, else None."""
    if "emotions" not in meta:
        return None
    check_labels(meta["emotions"], str(directory))
    head = build_head(hidden_size)
    try:
        head.load_state_dict(load_file(str(directory / HEAD_FILE)))
    except (OSError, RuntimeError, SafetensorError) as error:
        raise UserError(f"the emotion head in {directory} is unreadable ({str(error).splitlines()[0]}); export it again") from None
    return head.eval()
