"""The learned layer of the crisis check: a logistic regression on all-MiniLM-L6-v2 sentence
embeddings, trained on the files of `bench/crisis_set/` but blind set 2 (crisis messages against hard negatives in
many styles), in place of hand-written exemplars whose threshold and margin were tuned by hand.

A message is read in several views (`views`): the whole text, each sentence, and, in a long run-on
sentence, overlapping spans of `SPAN_WORDS` words, so that a signal in the middle of everyday news or
in an unpunctuated message is not averaged away by the rest of it. The layer fires when the highest
score of any view reaches the shipped threshold, which was chosen so that false alarms stay within
5% on files the classifier did not see (leave-one-file-group-out, `bench/crisis_learned.py`). Like
the exemplar layer before it, it only adds to the patterns (`CrisisCheck(semantic=...)` asks it when
no pattern matched), and chat and serve's window of turns reaches it joined, so a split signal is
read as one text.

The weights ship as `crisis_classifier.json` (384 coefficients, the intercept and the threshold, with
a digest of the files they were trained on); `python bench/crisis_learned.py --write` trains them
again, deterministically, from the committed set. Training needs scikit-learn (the `dev`
extra); scoring needs only torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from empathic_lora.lm import sentence_encoder

WEIGHTS = Path(__file__).with_name("crisis_classifier.json")
MAX_VIEWS = 16  # a pasted page is read in its first views only: the time stays bounded
SPAN_WORDS, SPAN_STRIDE = 14, 7  # spans of a long unpunctuated sentence: about one clause, overlapping by half
# L2 strength of the regression (scikit-learn's C), chosen among 0.3, 1, 3 and 10 on the
# leave-one-group-out folds of bench/crisis_learned.py.
C = 3.0


def views(text: str, split: Callable[[str], list[str]]) -> list[str]:
    """The texts a message is scored on: itself, its sentences when it has several, and spans of a
    sentence longer than a span."""
    parts = [text]
    found = split(text)
    for sentence in found if len(found) > 1 else [text]:
        if len(found) > 1:
            parts.append(sentence)
        words = sentence.split()
        parts += [" ".join(words[i:i + SPAN_WORDS]) for i in range(0, len(words) - SPAN_WORDS + SPAN_STRIDE, SPAN_STRIDE)
                  if len(words) > SPAN_WORDS]
    return list(dict.fromkeys(parts))[:MAX_VIEWS]


@dataclass(frozen=True)
class Weights:
    coef: list[float]
    intercept: float
    threshold: float
    trained_on: str  # digest of the training text (`digest`), so a stale file is noticed

    def save(self, path: Path = WEIGHTS) -> None:
        path.write_text(json.dumps(self.__dict__, indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> Weights:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def digest(examples: Iterable[tuple[str, bool]]) -> str:
    """sha256 of the training examples, in order."""
    return hashlib.sha256("\n".join(f"{int(crisis)}\t{text}" for text, crisis in examples).encode()).hexdigest()


class Embedder:
    """Views of messages, embedded; with `keep`, each view once for good (training and
    cross-validation read the set many times; chat reads each text once, and `CrisisCheck`
    remembers its verdicts)."""

    def __init__(self, split: Callable[[str], list[str]], keep: bool = False) -> None:
        self.split = split
        self.encode = sentence_encoder.SentenceEncoder("the learned crisis layer", "crisis-semantic")
        self.keep = keep
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Per message, its views' embeddings (views x 384)."""
        per_text = [views(text, self.split) for text in texts]
        new = list(dict.fromkeys(v for vs in per_text for v in vs if v not in self.cache))
        for start in range(0, len(new), 64):
            batch = new[start:start + 64]
            self.cache.update(zip(batch, self.encode(batch)))
        embedded = [torch.stack([self.cache[v] for v in vs]) for vs in per_text]
        if not self.keep:
            self.cache.clear()
        return embedded


def fit(embedded: Sequence[torch.Tensor], labels: Sequence[bool], c: float = C) -> tuple[list[float], float]:
    """Coefficients and intercept of the regression: every view of a harmless message is a negative
    (no part of it signals); a crisis message is a positive through its whole text and, as in
    multiple-instance learning, through its one view that a first fit on whole texts scores highest
    (the sentence that carries the signal, whose neighbours are everyday news)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    rows, targets = [], []
    for views_, crisis in zip(embedded, labels):
        chosen = views_[:1] if crisis else views_
        rows.append(chosen)
        targets += [int(crisis)] * len(chosen)

    def regression(x: torch.Tensor, y: list[int]) -> LogisticRegression:
        # One BLAS thread: beside torch's threads, a pool of them made each fit 60 times slower (2 s, not 0.03 s).
        with threadpool_limits(1):
            return LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(x.double().numpy(), y)

    first = regression(torch.cat(rows), targets)
    coef = torch.tensor(first.coef_[0], dtype=torch.float32)
    for views_, crisis in zip(embedded, labels):
        if crisis and len(views_) > 1:
            rows.append(views_[int((views_[1:] @ coef).argmax()) + 1:][:1])
            targets.append(1)
    final = regression(torch.cat(rows), targets)
    return [float(x) for x in final.coef_[0]], float(final.intercept_[0])


def score(embedded: torch.Tensor, coef: torch.Tensor, intercept: float) -> float:
    """The highest logit over a message's views."""
    return float((embedded @ coef).max()) + intercept


class LearnedLayer:
    """Calls as `layer(text) -> bool`: whether some view of `text` scores at or above the threshold.

    `split` cuts a message into sentences; the patterns' own splitter is passed in, so that both
    layers read the same sentences."""

    def __init__(self, split: Callable[[str], list[str]], weights: Weights | None = None, embed: Embedder | None = None) -> None:
        self.weights = weights or Weights.load()
        self.embed = embed or Embedder(split)
        self.coef = torch.tensor(self.weights.coef)

    def score(self, text: str) -> float:
        return score(self.embed([text])[0], self.coef, self.weights.intercept)

    def __call__(self, text: str) -> bool:
        return self.score(text) >= self.weights.threshold
