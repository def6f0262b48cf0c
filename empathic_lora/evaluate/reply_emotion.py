"""EmoAcc's classifier (Lee et al., COLING 2022): which of the 32 emotions a conversation has,
guessed from the listener's reply alone. A reply that fits the conversation's feeling lets it be
guessed; a generic one ("That is so nice") does not.

A linear (multinomial logistic) layer on all-MiniLM-L6-v2 sentence embeddings
(`lm/sentence_encoder.py`), trained once on the training split's reference listener replies and
cached in the cache directory by the data's content; its accuracy on the test split's reference
replies is the ceiling that generated replies are read against (docs/metrics.md). Fitted by hand
with torch's L-BFGS: it is one linear layer, and scikit-learn would be a new dependency for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.data.download import SPLIT_FILES
from empathic_lora.data.emotion_labels import EMOTIONS, label_ids
from empathic_lora.errors import UserError
from empathic_lora.lm.sentence_encoder import SentenceEncoder
from empathic_lora.paths import default_cache_dir, publish

VERSION = 1  # bump when the features or the fit change, so old caches are not reused
WEIGHT_DECAY = 1e-4
ITERATIONS = 200
BATCH = 256


class ReplyEmotionClassifier:
    """`predict(replies) -> class indices` into `EMOTIONS`; `ceiling`: accuracy on the test references."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, ceiling: float, encoder: SentenceEncoder) -> None:
        self.weight, self.bias, self.ceiling, self.encoder = weight, bias, ceiling, encoder

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        parts = [self.encoder(list(texts[i : i + BATCH])) for i in range(0, len(texts), BATCH)]
        return torch.cat(parts) if parts else torch.zeros(0, self.weight.shape[1])

    def predict(self, replies: Sequence[str]) -> torch.Tensor:
        return (self.embed(replies) @ self.weight.T + self.bias).argmax(dim=-1)

    @classmethod
    def load_or_train(cls, data_dir: str | None = None, cache_dir: str | Path | None = None) -> ReplyEmotionClassifier:
        """The classifier for this data, trained on first use and cached by the data's content."""
        encoder = SentenceEncoder("EmotionAccuracy (EmoAcc)")
        data = EmpatheticDialoguesDataModule(data_dir, cache_dir=str(cache_dir) if cache_dir else None)
        raw = data.raw_dir()
        for split in ("train", "test"):  # hashed below before the reader (which names a missing file) opens them
            if not (raw / SPLIT_FILES[split]).is_file():
                raise UserError(f"EmotionAccuracy (EmoAcc) data_dir {data_dir}: no {SPLIT_FILES[split]} there "
                                "(its classifier trains on the training split and reports its ceiling on the test split)")
        digest = hashlib.sha256(json.dumps(
            [VERSION, WEIGHT_DECAY, ITERATIONS, *(hashlib.sha256((raw / SPLIT_FILES[s]).read_bytes()).hexdigest() for s in ("train", "test"))]
        ).encode()).hexdigest()[:24]
        target = (Path(cache_dir) if cache_dir else default_cache_dir()) / "emoacc" / digest

        def build(staging: Path) -> None:
            train, test = data.examples("train"), data.examples("test")
            classifier = cls(torch.zeros(len(EMOTIONS), 384), torch.zeros(len(EMOTIONS)), 0.0, encoder)
            features = classifier.embed([e.target for e in train])
            labels = torch.tensor(label_ids([e.emotion for e in train], str(raw / SPLIT_FILES["train"])))
            weight, bias = _fit(features, labels)
            classifier.weight, classifier.bias = weight, bias
            truth = torch.tensor(label_ids([e.emotion for e in test], str(raw / SPLIT_FILES["test"])))
            ceiling = float((classifier.predict([e.target for e in test]) == truth).float().mean()) if test else 0.0
            torch.save({"weight": weight, "bias": bias, "ceiling": ceiling, "emotions": list(EMOTIONS),
                        "train_replies": len(train), "test_replies": len(test)}, staging / "classifier.pt")

        if not (target / "classifier.pt").is_file():
            # First use is often inside `train.py test`, whose loop runs in inference mode: the
            # regression needs autograd, and embeddings that are not inference tensors.
            with torch.inference_mode(False), torch.enable_grad():
                publish(target, build)
        saved = torch.load(target / "classifier.pt", weights_only=True)
        return cls(saved["weight"], saved["bias"], saved["ceiling"], encoder)


def _fit(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression with a little L2, by full-batch L-BFGS from zeros (deterministic)."""
    weight = torch.zeros(len(EMOTIONS), features.shape[1], requires_grad=True)
    bias = torch.zeros(len(EMOTIONS), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=ITERATIONS, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(features @ weight.T + bias, labels) + WEIGHT_DECAY * weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return weight.detach(), bias.detach()
