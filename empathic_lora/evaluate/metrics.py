"""Evaluation metrics: word-level perplexity, the reply metrics, and building those from YAML.

Reply (generation) metrics follow one protocol, torchmetrics' own for text:
`update(preds: list[str], target: list[str])`, one generated reply and one reference reply per
sample. A metric whose `update` annotates `target` as a list of reference *lists* (BLEU, chrF:
torchmetrics lets them score against several references) gets each reference wrapped as a
one-element list, because EmpatheticDialogues has exactly one reference per context.

A metric that also wants the whole example (context, emotion label) names a parameter
`examples` in its `update`: it then gets the samples.jsonl records of the replies, one dict per
reply with the keys `emotion`, `context`, `reference` and `reply` (torchmetrics' MetricCollection
passes a keyword only to the metrics whose `update` names it).

Words are whitespace-separated for this project's own word perplexity, reply length and Distinct-n.
The field's conventions (MoEL, CEM, CASE: `field_words`) split them with NLTK instead.
"""

from __future__ import annotations

import collections.abc
import hashlib
import typing
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import instantiate_class

# NLTK ships no models in its wheel and its punkt_tab download is not reachable offline, so the
# sentence splitter is Punkt untrained (no English abbreviation list) and the word tokenizer is
# the one `nltk.word_tokenize` applies to each sentence (docs/metrics.md says where they differ).
from nltk.tokenize import NLTKWordTokenizer, PunktSentenceTokenizer
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.wrappers.abstract import WrapperMetric
from transformers import PreTrainedTokenizerBase

from empathic_lora.data.emotion_labels import label_ids
from empathic_lora.errors import UserError
from empathic_lora.lm.sentence_encoder import SentenceEncoder

# The defaults of `--model.generation_metrics`: corpus BLEU-1..4 (sacrebleu's 13a tokenization,
# as in the MT and dialogue literature), ROUGE-L, corpus Distinct-1/2 and mean reply length.
DEFAULT_REPLY_METRICS: list[dict[str, Any]] = [
    *(
        {"name": f"bleu{n}", "class_path": "torchmetrics.text.SacreBLEUScore", "init_args": {"n_gram": n}}
        for n in (1, 2, 3, 4)
    ),
    {"name": "rouge", "class_path": "torchmetrics.text.ROUGEScore", "init_args": {"rouge_keys": "rougeL"}},
    {"name": "distinct1", "class_path": "empathic_lora.evaluate.metrics.DistinctN", "init_args": {"n": 1}},
    {"name": "distinct2", "class_path": "empathic_lora.evaluate.metrics.DistinctN", "init_args": {"n": 2}},
    *(
        {"name": f"distinct{n}_field", "class_path": "empathic_lora.evaluate.metrics.DistinctN",
         "init_args": {"n": n, "words": "field", "percent": True}}
        for n in (1, 2)
    ),
    *(
        {"name": f"distinct{n}_intra", "class_path": "empathic_lora.evaluate.metrics.IntraDistinctN",
         "init_args": {"n": n, "words": "field", "percent": True}}
        for n in (1, 2)
    ),
    {"name": "length", "class_path": "empathic_lora.evaluate.metrics.MeanReplyLength"},
]

# The contractions MoEL, CEM and CASE expand before tokenizing (CEM: src/utils/constants.py
# WORD_PAIRS), in their order: they are applied with str.replace, so the order matters.
FIELD_CONTRACTIONS: tuple[tuple[str, str], ...] = (
    ("it's", "it is"), ("don't", "do not"), ("doesn't", "does not"), ("didn't", "did not"),
    ("you'd", "you would"), ("you're", "you are"), ("you'll", "you will"), ("i'm", "i am"),
    ("they're", "they are"), ("that's", "that is"), ("what's", "what is"), ("couldn't", "could not"),
    ("i've", "i have"), ("we've", "we have"), ("can't", "cannot"), ("i'd", "i would"),
    ("aren't", "are not"), ("isn't", "is not"), ("wasn't", "was not"), ("weren't", "were not"),
    ("won't", "will not"), ("there's", "there is"), ("there're", "there are"),
)
_SENTENCES = PunktSentenceTokenizer()
_WORDS = NLTKWordTokenizer()
Words = Literal["whitespace", "field"]


def count_words(text: str) -> int:
    return len(text.split())


def field_words(text: str) -> list[str]:
    """The field's words: lowercased, contractions expanded, NLTK-tokenized (CEM's process_sent)."""
    text = text.lower()
    for short, long in FIELD_CONTRACTIONS:
        text = text.replace(short, long)
    return [word for sentence in _SENTENCES.tokenize(text) for word in _WORDS.tokenize(sentence)]


def split_words(text: str, words: Words) -> list[str]:
    return field_words(text) if words == "field" else text.split()


def _ngram_ids(words: list[str], n: int) -> list[int]:
    # Metric states must be tensors to be gathered across processes, and Python's str hash is
    # salted per process, so each n-gram becomes a stable 64-bit digest (collisions are negligible).
    return [
        int.from_bytes(hashlib.blake2b("\x1f".join(words[i : i + n]).encode(), digest_size=8).digest(), "little", signed=True)
        for i in range(len(words) - n + 1)
    ]


class DistinctN(Metric):
    """Corpus-level Distinct-n (Li et al., 2016): distinct n-grams / all n-grams over every reply.

    The distinct count is taken over the union of all processes' n-grams (a `cat` state), not
    summed per process, so it is exact under DDP.

    Args:
        n: n-gram order (1 for Distinct-1, 2 for Distinct-2).
        lowercase: Count `Sorry` and `sorry` as the same word.
        words: `whitespace` (this project's) or `field` (`field_words`, lowercased: CEM's and
            CASE's Distinct-n).
        percent: Report x 100, as the field's papers do.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, n: int = 1, lowercase: bool = False, words: Words = "whitespace", percent: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if n < 1:
            raise ValueError(f"DistinctN needs n >= 1, got {n}")
        self.n, self.lowercase, self.words, self.scale = n, lowercase, words, 100.0 if percent else 1.0
        self.add_state("ngrams", default=[], dist_reduce_fx="cat")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], target: Sequence[str] | None = None) -> None:
        """Add replies; `target` is accepted for the common protocol and ignored."""
        ids = [i for text in preds for i in _ngram_ids(split_words(text.lower() if self.lowercase else text, self.words), self.n)]
        self.total += len(ids)
        self.ngrams.append(torch.tensor(ids, dtype=torch.long, device=self.device).unique())

    def compute(self) -> torch.Tensor:
        if self.total == 0:
            return torch.tensor(0.0, device=self.device)
        return (self.scale * dim_zero_cat(self.ngrams).unique().numel() / self.total.double()).float()


class IntraDistinctN(MeanMetric):
    """Per-reply ("intra") Distinct-n, as ParlAI's IntraDistinctMetric: each reply's distinct
    n-grams / its n-grams, averaged over replies (a reply without n-grams counts as 0).

    Args:
        n: n-gram order.
        words: `whitespace` or `field` (see `DistinctN`).
        percent: Report x 100.
    """

    higher_is_better = True

    def __init__(self, n: int = 1, words: Words = "field", percent: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if n < 1:
            raise ValueError(f"IntraDistinctN needs n >= 1, got {n}")
        self.n, self.words, self.scale = n, words, 100.0 if percent else 1.0

    def update(self, preds: Sequence[str], target: Sequence[str] | None = None) -> None:  # type: ignore[override]
        """Add replies; `target` is accepted for the common protocol and ignored."""
        ratios = []
        for text in preds:
            ids = _ngram_ids(split_words(text, self.words), self.n)
            ratios.append(self.scale * len(set(ids)) / len(ids) if ids else 0.0)
        if ratios:
            super().update(torch.tensor(ratios, dtype=torch.float64))


class MeanReplyLength(MeanMetric):
    """Mean number of words of the generated replies."""

    higher_is_better = None

    def update(self, preds: Sequence[str], target: Sequence[str] | None = None) -> None:  # type: ignore[override]
        """Add replies; `target` is accepted for the common protocol and ignored."""
        if preds:
            super().update(torch.tensor([count_words(text) for text in preds], dtype=torch.float))


class EmbeddingSimilarity(MeanMetric):
    """Mean cosine similarity of each reply's and its reference's sentence embedding, with
    all-MiniLM-L6-v2 (the `semantic` extra ships it; docs/metrics.md has its limits).

    Args:
        batch_size: Replies embedded at once.
    """

    higher_is_better = True

    def __init__(self, batch_size: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_size = batch_size
        # Kept out of the metric's modules (and so out of its state and device moves): a frozen tool.
        self._encode = SentenceEncoder("EmbeddingSimilarity")

    def update(self, preds: Sequence[str], target: Sequence[str]) -> None:  # type: ignore[override]
        for start in range(0, len(preds), self.batch_size):
            replies = self._encode(list(preds[start : start + self.batch_size]))
            references = self._encode(list(target[start : start + self.batch_size]))
            super().update((replies * references).sum(dim=-1).double())


class WordPerplexity(Metric):
    """exp(summed token NLL of the responses / number of words in them), eos counting as a word.

    Token perplexity depends on the tokenizer; dividing the same total NLL by words instead of
    tokens gives a number comparable across tokenizers (docs/metrics.md).

    Args:
        ignore_index: Target value of positions that carry no label.
    """

    is_differentiable = True
    higher_is_better = False
    full_state_update = False

    def __init__(self, ignore_index: int = -100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.add_state("nll", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("words", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, num_words: int | torch.Tensor) -> None:
        """Add a batch.

        Args:
            preds: Logits, shape `(..., vocab)`.
            target: Token ids, shape `(...)`; `ignore_index` positions are skipped.
            num_words: Words in those responses (see `words_in_labels`).
        """
        nll = F.cross_entropy(
            preds.reshape(-1, preds.shape[-1]).float(), target.reshape(-1), ignore_index=self.ignore_index, reduction="sum"
        )
        self.nll += nll.double()
        self.words += torch.as_tensor(num_words, device=self.device)

    def compute(self) -> torch.Tensor:
        return torch.exp(self.nll / self.words)


class FieldWordPerplexity(Metric):
    """The field's word perplexity (MoEL, CEM, CASE): exp of the mean over examples of each
    example's mean NLL per word, its words being `field_words` of the reference plus its eos.

    Their models predict those words; ours predicts tokens, so an example's NLL is the sum over
    its tokens (eos included), which is the NLL of its word sequence too.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("mean_nll", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("examples", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, example_nll: torch.Tensor, example_words: torch.Tensor) -> None:
        """Add examples: each one's summed NLL and its number of words (eos included)."""
        self.mean_nll += (example_nll.double() / example_words.to(example_nll.device).double()).sum()
        self.examples += example_nll.numel()

    def compute(self) -> torch.Tensor:
        return torch.exp(self.mean_nll / self.examples)


def example_nll(logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Summed NLL per example from the supervised positions' logits and targets (in row order,
    as a boolean mask over the shifted `labels` selects them)."""
    rows = (labels[:, 1:] != ignore_index).nonzero()[:, 0]
    nll = F.cross_entropy(logits.float(), targets, reduction="none").double()
    return torch.zeros(labels.shape[0], dtype=torch.float64, device=nll.device).index_add_(0, rows, nll)


def field_words_in_labels(labels: torch.Tensor, tokenizer: PreTrainedTokenizerBase, ignore_index: int = -100) -> torch.Tensor:
    """Per example: `field_words` of its supervised reply, plus one for its eos label."""
    eos = tokenizer.eos_token_id
    rows = [[t for t in row.tolist() if t != ignore_index and t != eos] for row in labels]
    texts = tokenizer.batch_decode(rows, skip_special_tokens=False)
    return torch.tensor([len(field_words(text)) for text in texts]) + (labels == eos).sum(dim=1).cpu()


def words_in_labels(labels: torch.Tensor, tokenizer: PreTrainedTokenizerBase, ignore_index: int = -100) -> int:
    """Words of the supervised responses in a batch of labels: their decoded text split on
    whitespace, plus one per eos label (the end of the reply is predicted like a word)."""
    eos = tokenizer.eos_token_id
    rows = [[t for t in row.tolist() if t != ignore_index and t != eos] for row in labels]
    texts = tokenizer.batch_decode(rows, skip_special_tokens=False)
    return sum(count_words(text) for text in texts) + int((labels == eos).sum())


def _wants_reference_lists(metric: Metric) -> bool:
    """Whether `update`'s `target` is annotated as a list of reference lists and nothing else."""
    try:
        hint = typing.get_type_hints(type(metric).update).get("target")
    except Exception:  # unresolvable annotations: assume the common flat protocol
        return False
    sequences = (collections.abc.Sequence, list, tuple)
    args = typing.get_args(hint)
    return typing.get_origin(hint) in sequences and bool(args) and typing.get_origin(args[0]) in sequences


class ReferenceLists(WrapperMetric):
    """Adapts a multi-reference metric (BLEU, chrF) to the one-reference protocol."""

    def __init__(self, metric: Metric) -> None:
        super().__init__()
        self.metric = metric

    def update(self, preds: Sequence[str], target: Sequence[str]) -> None:
        self.metric.update(preds, [[reference] for reference in target])

    def compute(self) -> Any:
        return self.metric.compute()

    def reset(self) -> None:
        self.metric.reset()


def build_reply_metrics(specs: Sequence[dict[str, Any]] | None, flag: str = "--model.generation_metrics") -> MetricCollection:
    """The reply metrics from `class_path`/`init_args` entries (`None`: the defaults).

    Each entry may carry a `name` (default: the class name, lowercased); a metric returning a
    scalar is logged as `{stage}/{name}`, one returning a dict (ROUGE) as `{stage}/{key}` per key.
    """
    metrics: dict[str, Metric] = {}
    for index, spec in enumerate(DEFAULT_REPLY_METRICS if specs is None else specs):
        where = f"{flag}[{index}]"
        if not isinstance(spec, dict) or "class_path" not in spec:
            raise UserError(f"{where} must be a mapping with a class_path (and optional init_args, name), got {spec!r}")
        unknown = set(spec) - {"class_path", "init_args", "name"}
        if unknown:
            raise UserError(f"{where} has unknown key(s) {sorted(unknown)}; allowed: class_path, init_args, name")
        init_args = spec.get("init_args") or {}
        try:
            metric = instantiate_class((), {"class_path": spec["class_path"], "init_args": init_args})
        except (ImportError, AttributeError, TypeError, ValueError) as error:
            raise UserError(f"{where}: {spec['class_path']} with init_args {init_args} failed: {error}") from None
        if not isinstance(metric, Metric):
            raise UserError(f"{where}: {spec['class_path']} is not a torchmetrics Metric")
        name = str(spec.get("name") or type(metric).__name__.lower())
        if name in metrics:
            raise UserError(f"{where}: the name {name!r} is taken by an earlier entry; give each entry its own name")
        if "." in name or "/" in name:
            raise UserError(f"{where}: the name {name!r} may not contain '.' or '/'")
        metrics[name] = ReferenceLists(metric) if _wants_reference_lists(metric) else metric
    # compute_groups would share state between metrics whose states merely look alike
    return MetricCollection(metrics, compute_groups=False)


def reply_opening(text: str, words: int = 3) -> str:
    """A reply's first `words` field words, lowercased ("That's so hard." -> "that is so")."""
    return " ".join(field_words(text)[:words])


def generic_reply_rate(replies: Sequence[str], top: int = 5, words: int = 3) -> float:
    """The share of `replies` whose opening (`reply_opening`) is one of the `top` most frequent
    openings of these replies; ties at the cut are broken by the opening's text."""
    return common_opening_share([reply_opening(text, words) for text in replies], top)


def common_opening_share(openings: Sequence[str], top: int = 5) -> float:
    """`generic_reply_rate` from each reply's opening, so that a bootstrap resamples openings
    found once instead of parsing every resampled reply again (100x faster on the test split)."""
    if not openings:
        return 0.0
    counts = collections.Counter(openings)
    common = {opening for opening, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]}
    return sum(opening in common for opening in openings) / len(openings)


class GenericReplyRate(Metric):
    """The generic-reply rate: the share of replies whose first three words are one of the five
    most frequent openings in the set (docs/metrics.md). A set-level measure: which openings are
    "frequent" depends on the whole set, so it has no per-reply value (`score` bootstraps it by
    resampling the replies).

    Args:
        top: How many of the most frequent openings count as generic.
        words: How many leading words make an opening.
        percent: Report x 100.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, top: int = 5, words: int = 3, percent: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if top < 1 or words < 1:
            raise ValueError(f"GenericReplyRate needs top >= 1 and words >= 1, got {top}, {words}")
        self.top, self.words, self.scale = top, words, 100.0 if percent else 1.0
        self.add_state("openings", default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], target: Sequence[str] | None = None) -> None:
        """Add replies; `target` is accepted for the common protocol and ignored."""
        ids = [_ngram_ids([reply_opening(text, self.words)], 1)[0] for text in preds]
        self.openings.append(torch.tensor(ids, dtype=torch.long, device=self.device))

    def compute(self) -> torch.Tensor:
        ids = dim_zero_cat(self.openings) if self.openings else torch.zeros(0, dtype=torch.long)
        if ids.numel() == 0:
            return torch.tensor(0.0, device=self.device)
        values, counts = ids.unique(return_counts=True)
        # Most frequent first; equal counts by id, a stable stand-in for the text across processes.
        order = sorted(range(len(values)), key=lambda i: (-int(counts[i]), int(values[i])))[: self.top]
        return self.scale * torch.isin(ids, values[order]).double().mean().float()


class EmotionAccuracy(Metric):
    """EmoAcc (Lee et al., COLING 2022): the share of replies from which a classifier names the
    conversation's emotion label (`evaluate/reply_emotion.py`: all-MiniLM-L6-v2 embeddings and a
    linear layer trained on the training split's reference replies, cached). Logs `emoacc` and,
    beside it, `emoacc_ceiling`: the classifier's accuracy on the test split's reference replies.
    Needs the replies' `emotion` (samples.jsonl records) and the `semantic` extra.

    Args:
        data_dir: The data the classifier is trained on (`--data.data_dir`'s values; `null`: the
            official download).
        cache_dir: Where the classifier is cached (default: the project's cache directory).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    mean_over_replies = True

    def __init__(self, data_dir: str | None = None, cache_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_dir, self.cache_dir = data_dir, cache_dir
        self._classifier: Any = None  # trained or loaded at the first update: building the metric stays cheap
        self.add_state("hits", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def classifier(self) -> Any:
        if self._classifier is None:
            from empathic_lora.evaluate.reply_emotion import ReplyEmotionClassifier

            self._classifier = ReplyEmotionClassifier.load_or_train(self.data_dir, self.cache_dir)
        return self._classifier

    def update(self, preds: Sequence[str], target: Sequence[str] | None = None, examples: Sequence[dict[str, Any]] = ()) -> None:
        """Add replies with their records (whose `emotion` is the label to name)."""
        if len(examples) != len(preds) or any(not e.get("emotion") for e in examples):
            raise UserError("EmotionAccuracy (EmoAcc) needs each reply's conversation emotion (the samples' 'emotion' key)")
        truth = torch.tensor(label_ids([e["emotion"] for e in examples], "the replies' emotion labels"))
        self.hits += int((self.classifier.predict(list(preds)) == truth).sum())
        self.total += len(preds)

    def compute(self) -> dict[str, torch.Tensor]:
        accuracy = self.hits.double() / self.total if self.total else torch.tensor(0.0)
        return {"emoacc": accuracy.float(), "emoacc_ceiling": torch.tensor(self.classifier.ceiling)}
