"""The learned crisis layer without its model: its shipped weights belong to the committed training
set, fitting is deterministic, and it reads a message in views (properties over any text). With the
model (what it catches, through the window too): test_crisis_check.py, which loads it once."""

from __future__ import annotations

import importlib.util
import sys

import torch
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from empathic_lora.safety import learned_layer
from empathic_lora.safety.crisis_check import sentences

spec = importlib.util.spec_from_file_location("crisis_learned", ROOT / "bench" / "crisis_learned.py")
trainer = sys.modules["crisis_learned"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trainer)


def test_the_shipped_weights_were_trained_on_the_committed_set() -> None:
    weights = learned_layer.Weights.load()
    assert len(weights.coef) == 384 and all(isinstance(x, float) for x in weights.coef)
    examples = trainer.load(trainer.bench.SET_DIR)
    # A training file changed without `python bench/crisis_learned.py --write` fails here.
    assert weights.trained_on == learned_layer.digest((trainer.training_text(e), e.crisis) for e in examples)
    assert {e.part for e in examples} == {*trainer.GROUPS, *trainer.TRAIN}


def test_fitting_is_deterministic_and_separates() -> None:
    generator = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(384, generator=generator), dim=0)
    views = [torch.nn.functional.normalize(torch.randn(3, 384, generator=generator) + (2 * direction if i % 2 else 0), dim=1)
             for i in range(40)]
    labels = [bool(i % 2) for i in range(40)]
    first, again = learned_layer.fit(views, labels), learned_layer.fit(views, labels)
    assert first == again
    coef, intercept = torch.tensor(first[0]), first[1]
    scores = [learned_layer.score(v, coef, intercept) for v in views]
    assert min(s for s, crisis in zip(scores, labels) if crisis) > max(s for s, crisis in zip(scores, labels) if not crisis)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_views_of_any_text(text: str) -> None:
    views = learned_layer.views(text, sentences)
    assert views[0] == text and 1 <= len(views) <= learned_layer.MAX_VIEWS
    assert len(set(views)) == len(views) and views == learned_layer.views(text, sentences)
    for view in views[1:]:  # a sentence or a span of the message, no more
        assert all(word in text for word in view.split()), view
        assert len(view.split()) <= max([learned_layer.SPAN_WORDS, *(len(s.split()) for s in sentences(text))])


def test_a_long_unpunctuated_sentence_is_read_in_overlapping_spans() -> None:
    text = " ".join(f"w{i}" for i in range(30))
    views = learned_layer.views(text, sentences)
    assert views[1] == " ".join(f"w{i}" for i in range(14)) and views[2].startswith("w7 ")
    assert views[-1].endswith("w29")  # the end of the message is read too
