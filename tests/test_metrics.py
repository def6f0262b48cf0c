"""The metric classes on hand-built inputs, their DDP-style merging, and building them from YAML."""

from __future__ import annotations

import math
import re

import pytest
import torch
import yaml
from torchmetrics.text import SacreBLEUScore

from conftest import ROOT
from empathic_lora import base
from empathic_lora.conversation import Formatter, Turn
from empathic_lora.data import Collator
from empathic_lora.errors import UserError
from empathic_lora.metrics import (
    DEFAULT_REPLY_METRICS,
    DistinctN,
    MeanReplyLength,
    WordPerplexity,
    build_reply_metrics,
    words_in_labels,
)

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


def test_word_perplexity_matches_an_independent_computation() -> None:
    tokenizer = base.load_tokenizer("builtin:tiny-gpt2")
    targets = ["That sounds really hard, I'm sorry.", "Oh wow, congratulations!"]
    batch = _batch(tokenizer, ["I lost my job today", "I got the job"], targets)
    labels = batch["labels"][:, 1:]
    torch.manual_seed(0)
    logits = torch.randn(*labels.shape, len(tokenizer))

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
        ([{"class_path": "empathic_lora.metrics.DistinctN", "init_args": {"n": 0}}], "n >= 1"),
        ([{"class_path": "empathic_lora.metrics.DistinctN", "init_args": {"m": 1}}], "Unexpected keyword arguments: `m`"),
        ([{"class_path": "empathic_lora.metrics.DistinctN"}] * 2, "[1]: the name 'distinctn' is taken"),
        ([{"class_path": "empathic_lora.metrics.DistinctN", "args": {}}], "unknown key(s) ['args']"),
        (["torchmetrics.text.BLEUScore"], "must be a mapping with a class_path"),
    ],
)
def test_bad_metric_entries_name_the_entry(specs: list, needle: str) -> None:
    with pytest.raises(UserError) as error:
        build_reply_metrics(specs)
    assert "--model.generation_metrics[" in str(error.value) and needle in str(error.value)


def test_the_documented_defaults_are_the_defaults() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    block = re.search(r"means this list:\n\n```yaml\n(.*?)```", doc, re.S).group(1)
    assert yaml.safe_load(block)["model"]["generation_metrics"] == DEFAULT_REPLY_METRICS
    assert set(build_reply_metrics(None)) == {f"bleu{n}" for n in range(1, 5)} | {"rouge", "distinct1", "distinct2", "length"}
