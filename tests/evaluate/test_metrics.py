"""The metric classes on hand-built inputs, their DDP-style merging, and building them from YAML."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torchmetrics
import yaml
from conftest import ROOT
from torchmetrics.text import SacreBLEUScore

from empathic_lora.conversation import Formatter, Turn
from empathic_lora.data.datamodule import Collator
from empathic_lora.errors import UserError
from empathic_lora.evaluate import reply_scoring
from empathic_lora.evaluate.metrics import (
    DEFAULT_REPLY_METRICS,
    DistinctN,
    EmbeddingSimilarity,
    FieldWordPerplexity,
    IntraDistinctN,
    MeanReplyLength,
    WordPerplexity,
    build_reply_metrics,
    example_nll,
    field_words,
    field_words_in_labels,
    words_in_labels,
)
from empathic_lora.lm import pretrained

REPLIES = ["i am so sad", "i am so happy", "wow"]


def test_distinct_n_on_hand_made_replies() -> None:
    # unigrams: i am so sad i am so happy wow -> 9, distinct {i, am, so, sad, happy, wow} -> 6
    # bigrams: (i am)(am so)(so sad)(i am)(am so)(so happy); "wow" has none -> 6, distinct 4
    # trigrams: (i am so)(am so sad)(i am so)(am so happy) -> 4, distinct 3
    for n, expected in ((1, 6 / 9), (2, 4 / 6), (3, 3 / 4), (5, 0.0)):
        metric = DistinctN(n)
        metric.update(REPLIES)
        assert metric.compute().item() == pytest.approx(expected)


def test_distinct_n_is_corpus_level_across_updates_and_folds_case_on_request() -> None:
    split = DistinctN(1)
    split.update(REPLIES[:1])
    split.update(REPLIES[1:])  # a per-batch average would give (4/4 + 5/5) / 2 = 1.0
    assert split.compute().item() == pytest.approx(6 / 9)
    cased = ["Sorry to hear", "sorry to hear"]
    assert DistinctN(1)(cased).item() == pytest.approx(4 / 6)
    assert DistinctN(1, lowercase=True)(cased).item() == pytest.approx(3 / 6)


def test_mean_reply_length_counts_whitespace_words() -> None:
    metric = MeanReplyLength()
    metric.update(["That is  great!", "", "oh   no"], ["ignored", "ignored", "ignored"])
    assert metric.compute().item() == pytest.approx((3 + 0 + 2) / 3)


def _batch(tokenizer, contexts: list[str], targets: list[str]) -> dict[str, torch.Tensor]:
    formatter = Formatter(tokenizer)
    ids, prompt_lengths = formatter.encode_examples([(Turn("speaker", c),) for c in contexts], targets, 64)
    items = [{"input_ids": i, "prompt_length": p} for i, p in zip(ids, prompt_lengths)]
    return Collator(pad_id=tokenizer.eos_token_id)(items)


TARGETS = ["That sounds really hard, I'm sorry.", "Oh wow, congratulations!"]


def _random_logits_batch():
    """A batch of two replies (TARGETS) of the tiny tokenizer, and random logits for its labels."""
    tokenizer = pretrained.load_tokenizer("builtin:tiny-gpt2")
    batch = _batch(tokenizer, ["I lost my job today", "I got the job"], TARGETS)
    labels = batch["labels"][:, 1:]
    torch.manual_seed(0)
    return tokenizer, batch, labels, torch.randn(*labels.shape, len(tokenizer))


def test_word_perplexity_matches_an_independent_computation() -> None:
    tokenizer, batch, labels, logits = _random_logits_batch()
    targets = TARGETS

    metric = WordPerplexity()
    metric.update(logits, labels, words_in_labels(batch["labels"], tokenizer))

    # Independently: a log-softmax by hand at every labelled position, words from the raw text.
    nll = 0.0
    for row in range(labels.shape[0]):
        for position in range(labels.shape[1]):
            token = int(labels[row, position])
            if token != -100:
                scores = logits[row, position].double()
                nll -= float(scores[token] - torch.logsumexp(scores, 0))
    words = sum(len(t.split()) + 1 for t in targets)  # + the eos of each reply
    assert words_in_labels(batch["labels"], tokenizer) == words == 11
    assert metric.compute().item() == pytest.approx(math.exp(nll / words), rel=1e-6)


def test_states_merge_like_one_process_saw_everything() -> None:
    """What DDP does at compute(): each state reduced with its dist_reduce_fx."""
    halves = (["i am so sad", "so sad"], ["i am so sad too", "wow"])  # n-grams repeat across halves
    for make in (lambda: DistinctN(1), lambda: DistinctN(2), MeanReplyLength):
        whole, first, second = make(), make(), make()
        whole.update(halves[0] + halves[1])
        first.update(halves[0])
        second.update(halves[1])
        first.merge_state(second)
        assert first.compute().item() == pytest.approx(whole.compute().item())
    # 6 distinct of 12 words; summing each process's distinct count would claim (4 + 6) / 12.
    assert DistinctN(1)(halves[0] + halves[1]).item() == pytest.approx(6 / 12)

    torch.manual_seed(0)
    logits, targets = torch.randn(10, 7), torch.randint(0, 7, (10,))
    targets[3] = -100
    whole, first, second = WordPerplexity(), WordPerplexity(), WordPerplexity()
    whole.update(logits, targets, 6)
    first.update(logits[:4], targets[:4], 2)
    second.update(logits[4:], targets[4:], 4)
    first.merge_state(second)
    assert first.compute().item() == pytest.approx(whole.compute().item())


def test_multi_reference_metrics_get_one_reference_per_reply() -> None:
    preds, references = ["i am so sorry to hear that", "that is great"], ["so sorry to hear that", "wow that is great"]
    metrics = build_reply_metrics([
        {"name": "bleu", "class_path": "torchmetrics.text.SacreBLEUScore", "init_args": {"n_gram": 2}},
        {"class_path": "torchmetrics.text.ROUGEScore", "init_args": {"rouge_keys": "rougeL"}},
    ])
    metrics.update(preds, references)
    scores = metrics.compute()
    direct = SacreBLEUScore(n_gram=2)
    direct.update(preds, [[r] for r in references])
    assert scores["bleu"].item() == pytest.approx(direct.compute().item())
    assert scores["bleu"].item() > 0.3
    assert set(scores) == {"bleu", "rougeL_fmeasure", "rougeL_precision", "rougeL_recall"}


@pytest.mark.parametrize(
    ("specs", "needle"),
    [
        ([{"class_path": "no_such_module.Metric"}], "[0]: no_such_module.Metric"),
        ([{"class_path": "collections.OrderedDict"}], "is not a torchmetrics Metric"),
        ([{"class_path": "empathic_lora.evaluate.metrics.DistinctN", "init_args": {"n": 0}}], "n >= 1"),
        ([{"class_path": "empathic_lora.evaluate.metrics.DistinctN", "init_args": {"m": 1}}], "Unexpected keyword arguments: `m`"),
        ([{"class_path": "empathic_lora.evaluate.metrics.DistinctN"}] * 2, "[1]: the name 'distinctn' is taken"),
        ([{"class_path": "empathic_lora.evaluate.metrics.DistinctN", "args": {}}], "unknown key(s) ['args']"),
        (["torchmetrics.text.BLEUScore"], "must be a mapping with a class_path"),
    ],
)
def test_bad_metric_entries_name_the_entry(specs: list, needle: str) -> None:
    with pytest.raises(UserError) as error:
        build_reply_metrics(specs)
    assert "--model.generation_metrics[" in str(error.value) and needle in str(error.value)


def test_the_documented_defaults_are_the_defaults() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    block = re.search(r"is this list:\n\n```yaml\n(.*?)```", doc, re.S).group(1)
    assert yaml.safe_load(block)["model"]["generation_metrics"] == DEFAULT_REPLY_METRICS
    assert set(build_reply_metrics(None)) == {f"bleu{n}" for n in range(1, 5)} | {"rouge", "length"} | {
        f"distinct{n}{kind}" for n in (1, 2) for kind in ("", "_field", "_intra")}


# What `nltk.word_tokenize` (with NLTK's punkt_tab English model) returns for these texts after
# CEM's lowercasing and contraction expansion: Treebank splits and sentence-final periods.
FIELD_TOKENIZATION = [
    ("I'm so sad. It's raining, isn't it? Don't worry!",
     ["i", "am", "so", "sad", ".", "it", "is", "raining", ",", "is", "not", "it", "?", "do", "not", "worry", "!"]),
    ("He'll be fine... We're proud of you, shouldn't he be?",
     ["he", "'ll", "be", "fine", "...", "we", "'re", "proud", "of", "you", ",", "should", "n't", "he", "be", "?"]),
    ('She said "wow" and paid $3.50 (cash).', ["she", "said", "``", "wow", "''", "and", "paid", "$", "3.50", "(", "cash", ")", "."]),
    ("That's great. Congrats! I can't wait.", ["that", "is", "great", ".", "congrats", "!", "i", "can", "not", "wait", "."]),
]


@pytest.mark.parametrize(("text", "words"), FIELD_TOKENIZATION)
def test_field_words_follow_cem_preprocessing_and_word_tokenize(text: str, words: list[str]) -> None:
    assert field_words(text) == words


def test_field_distinct_pools_nltk_words_in_percent_and_intra_distinct_averages_replies() -> None:
    replies = ["I'm sad. I'm sad.", "I am happy"]  # field words: i am sad . i am sad . | i am happy
    corpus = DistinctN(1, words="field", percent=True)
    corpus.update(replies)
    assert corpus.compute().item() == pytest.approx(100 * 5 / 11)  # {i, am, sad, ., happy} of 11
    intra = IntraDistinctN(2, words="field", percent=True)
    intra.update(replies)
    # bigrams: (i am)(am sad)(sad .)(. i)(i am)(am sad)(sad .) -> 4 of 7; (i am)(am happy) -> 2 of 2
    assert intra.compute().item() == pytest.approx(100 * (4 / 7 + 2 / 2) / 2)
    whitespace = IntraDistinctN(1, words="whitespace")
    whitespace.update(["a a b", "x"])
    assert whitespace.compute().item() == pytest.approx((2 / 3 + 1) / 2)


def test_field_word_perplexity_is_the_mean_of_each_examples_mean_word_loss() -> None:
    tokenizer, batch, labels, logits = _random_logits_batch()
    supervised = labels != -100

    per_example = example_nll(logits[supervised], labels[supervised], batch["labels"])
    words = field_words_in_labels(batch["labels"], tokenizer)
    # "that sounds really hard , i am sorry ." + eos; "oh wow , congratulations !" + eos
    assert words.tolist() == [10, 6]
    for row in range(2):
        row_nll = -sum(float(logits[row, p].double().log_softmax(0)[labels[row, p]]) for p in range(labels.shape[1]) if supervised[row, p])
        assert per_example[row].item() == pytest.approx(row_nll, rel=1e-6)

    metric = FieldWordPerplexity()
    metric.update(per_example[:1], words[:1])
    metric.update(per_example[1:], words[1:])
    expected = math.exp((per_example[0].item() / 10 + per_example[1].item() / 6) / 2)
    assert metric.compute().item() == pytest.approx(expected, rel=1e-9)
    # Not the corpus mean over all words, which weights long replies more.
    assert expected != pytest.approx(math.exp(per_example.sum().item() / 16), rel=1e-3)


class EmotionCount(torchmetrics.Metric):
    """A metric that wants the whole example: how many replies were to a 'sad' speaker."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sad", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: list[str], target: list[str], examples: list[dict]) -> None:
        assert [e["reply"] for e in examples] == preds and [e["reference"] for e in examples] == target
        self.sad += sum(e["emotion"] == "sad" for e in examples)

    def compute(self) -> torch.Tensor:
        return self.sad


def test_a_metric_that_names_examples_gets_the_whole_example_and_the_others_do_not_care() -> None:
    metrics = build_reply_metrics([
        {"name": "sad", "class_path": "test_metrics.EmotionCount"},
        {"name": "length", "class_path": "empathic_lora.evaluate.metrics.MeanReplyLength"},
    ])
    lines = [{"emotion": "sad", "context": "c", "reference": "r one", "reply": "a b"},
             {"emotion": "joyful", "context": "d", "reference": "r two", "reply": "a b c d"}]
    assert reply_scoring.score(metrics, lines) == {"sad": 1.0, "length": 3.0}


def test_embedding_similarity_ranks_a_paraphrase_above_an_unrelated_reply() -> None:
    metric = EmbeddingSimilarity(batch_size=2)
    reference = "I'm so sorry you lost your job."
    pairs = {"same": reference, "paraphrase": "That is awful, I am sorry about your job loss.",
             "unrelated": "The train to Paris leaves at noon."}
    scores = {}
    for name, reply in pairs.items():
        metric.update([reply], [reference])
        scores[name] = metric.compute().item()
        metric.reset()
    assert scores["same"] == pytest.approx(1.0, abs=1e-5)
    assert scores["same"] > scores["paraphrase"] > scores["unrelated"] + 0.3
    metric.update(list(pairs.values()), [reference] * 3)  # batches of 2 and 1: the mean over all three
    assert metric.compute().item() == pytest.approx(sum(scores.values()) / 3, abs=1e-5)


def test_embedding_similarity_without_its_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from empathic_lora.lm import sentence_encoder

    monkeypatch.setattr(sentence_encoder, "available", lambda: False)
    with pytest.raises(UserError, match=r'pip install "empathic_lora\[semantic\]"'):
        build_reply_metrics([{"name": "semantic", "class_path": "empathic_lora.evaluate.metrics.EmbeddingSimilarity"}])
