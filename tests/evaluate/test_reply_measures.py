"""The reply measures of issue 22 on hand-made replies: the generic-reply rate, EmoAcc (and its
ceiling), and the scorer's paired significance for two runs on the same examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from empathic_lora.conversation import render
from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.evaluate import compare_runs
from empathic_lora.evaluate.metrics import (
    EmotionAccuracy,
    GenericReplyRate,
    common_opening_share,
    generic_reply_rate,
    reply_opening,
)
from empathic_lora.evaluate.reply_emotion import ReplyEmotionClassifier

REPLIES = (["That is so sad."] * 3 + ["That's so nice!"] * 2 + ["I am sorry to hear that."] * 2
           + ["Oh no, what happened?", "Wow, congratulations!", "How did it go?", "Did you call her?", "Why not?"])


def test_an_opening_is_the_first_three_field_words() -> None:
    assert reply_opening("That's so nice!") == "that is so"
    assert reply_opening("Why not?") == "why not ?"


def test_generic_rate_counts_the_replies_opening_with_the_five_most_frequent_openings() -> None:
    # "that is so" 5, "i am sorry" 2, then five openings once each: three of them make the top five
    # (ties broken by text: "did you call", "how did it", "oh no ,"); 5 + 2 + 1 + 1 + 1 of 12.
    assert generic_reply_rate(REPLIES) == pytest.approx(10 / 12)
    assert generic_reply_rate(REPLIES, top=1) == pytest.approx(5 / 12)
    assert generic_reply_rate(["Same here."] * 4) == 1.0 and generic_reply_rate([]) == 0.0
    # The form score's bootstrap uses: openings found once, then counted per resample.
    openings = [reply_opening(text) for text in REPLIES]
    assert common_opening_share(openings) == generic_reply_rate(REPLIES)
    assert common_opening_share(openings, top=1) == generic_reply_rate(REPLIES, top=1)
    metric = GenericReplyRate(top=2)
    metric.update(REPLIES[:6])
    metric.update(REPLIES[6:])
    assert float(metric.compute()) == pytest.approx(7 / 12)


@pytest.fixture(scope="module")
def sample_test() -> list:
    return EmpatheticDialoguesDataModule("builtin:sample").examples("test")


@pytest.fixture(scope="module")
def classifier() -> ReplyEmotionClassifier:
    return ReplyEmotionClassifier.load_or_train("builtin:sample")


def _lines(examples: list, replies: list[str]) -> list[dict]:
    return [{"stage": "test", "epoch": 0, "context": render(e.context), "emotion": e.emotion, "reference": e.target, "reply": r}
            for e, r in zip(examples, replies)]


def test_emoacc_of_the_test_references_is_the_ceiling(classifier: ReplyEmotionClassifier, sample_test: list) -> None:
    assert 0 < classifier.ceiling <= 1
    metric = EmotionAccuracy("builtin:sample")
    references = [e.target for e in sample_test]
    metric.update(references, references, examples=_lines(sample_test, references))
    scores = metric.compute()
    assert float(scores["emoacc"]) == pytest.approx(classifier.ceiling)
    assert float(scores["emoacc_ceiling"]) == pytest.approx(classifier.ceiling)
    # One reply for every conversation names one emotion: right only where that is the label.
    generic = EmotionAccuracy("builtin:sample")
    generic.update(["Okay."] * len(sample_test), references, examples=_lines(sample_test, references))
    named = int(classifier.predict(["Okay."])[0])
    from empathic_lora.data.emotion_labels import EMOTIONS

    share = sum(e.emotion == EMOTIONS[named] for e in sample_test) / len(sample_test)
    assert float(generic.compute()["emoacc"]) == pytest.approx(share)


def test_the_classifier_is_trained_once_and_cached(classifier: ReplyEmotionClassifier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("empathic_lora.evaluate.reply_emotion._fit", lambda *a: pytest.fail("trained again"))
    again = ReplyEmotionClassifier.load_or_train("builtin:sample")
    assert torch.equal(again.weight, classifier.weight) and again.ceiling == classifier.ceiling


def test_emoacc_needs_the_emotion_of_each_reply() -> None:
    with pytest.raises(Exception, match="needs each reply's conversation emotion"):
        EmotionAccuracy("builtin:sample").update(["hi"], ["hi"], examples=[{"reply": "hi"}])


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_score_compares_two_runs_on_the_same_examples_pairwise(
    tmp_path: Path, sample_test: list, classifier: ReplyEmotionClassifier, capsys: pytest.CaptureFixture
) -> None:
    references = [e.target for e in sample_test]
    a = _write(tmp_path / "a.jsonl", _lines(sample_test, references))
    b = _write(tmp_path / "b.jsonl", _lines(sample_test, ["That is so nice."] * len(sample_test))[::-1])  # order does not matter
    config = tmp_path / "emoacc.yaml"
    config.write_text(json.dumps({"model": {"generation_metrics": [
        {"name": "emoacc", "class_path": "empathic_lora.evaluate.metrics.EmotionAccuracy", "init_args": {"data_dir": "builtin:sample"}},
        {"name": "length", "class_path": "empathic_lora.evaluate.metrics.MeanReplyLength"}]}}))
    compare_runs.main([str(a), str(b), "--config", str(config), "--bootstrap", "200"])
    out = capsys.readouterr().out
    paired = {line.split()[0]: line.split() for line in out.split("paired, B (second) against A (first)")[1].splitlines()[2:]}
    assert float(paired["generic_rate"][2]) == 1.0 and float(paired["generic_rate"][4]) < 0.05
    hits_a = (classifier.predict(references) == torch.tensor([_index(e.emotion) for e in sample_test])).numpy()
    hits_b = (classifier.predict(["That is so nice."] * len(sample_test)) == torch.tensor([_index(e.emotion) for e in sample_test])).numpy()
    only_a, only_b = int((hits_a & ~hits_b).sum()), int((~hits_a & hits_b).sum())
    assert f"({only_a} A only, {only_b} B only)" in out
    assert float(paired["emoacc"][4]) == pytest.approx(binomtest(only_b, only_a + only_b).pvalue, rel=1e-2)
    assert "length" in paired

    compare_runs.main([str(a), str(a), "--bootstrap", "50"])
    same = capsys.readouterr().out.split("against A (first)")[1]
    assert all(line.split()[4] == "1" for line in same.splitlines()[2:] if line.strip())  # no difference, p = 1


def test_score_says_when_two_paths_cannot_be_paired(tmp_path: Path, sample_test: list, capsys: pytest.CaptureFixture) -> None:
    references = [e.target for e in sample_test]
    a = _write(tmp_path / "a.jsonl", _lines(sample_test, references))
    b = _write(tmp_path / "b.jsonl", _lines(sample_test[:-1], references[:-1]))
    compare_runs.main([str(a), str(b), "--bootstrap", "10"])
    assert "no paired comparison" in capsys.readouterr().out


def _index(emotion: str) -> int:
    from empathic_lora.data.emotion_labels import EMOTION_INDEX

    return EMOTION_INDEX[emotion]


def test_paired_bootstrap_p_is_small_for_a_consistent_difference_and_one_for_none() -> None:
    a, b = np.zeros(50), np.ones(50)
    assert compare_runs.paired_bootstrap_p(50, lambda i: b[i].mean() - a[i].mean(), 100) < 0.05
    assert compare_runs.paired_bootstrap_p(50, lambda i: a[i].mean() - a[i].mean(), 100) == 1.0


def test_repetition_rate_counts_replies_equal_to_an_earlier_one_of_the_same_conversation() -> None:
    from empathic_lora.evaluate.repetition_probe import repetition_rate

    conversations = [["That is so hard.", "Oh no!", "That is so hard!!"], ["Oh no!", "How nice."]]
    assert repetition_rate(conversations) == pytest.approx(1 / 3)  # "Oh no!" in another conversation does not count
    assert repetition_rate([["a"], ["b"]]) == 0.0


def test_the_probe_roll_out_answers_with_the_bots_own_replies_in_the_context(tiny_ckpt: Path) -> None:
    from empathic_lora.conversation import Formatter, Turn
    from empathic_lora.evaluate.repetition_probe import PROBES, roll_out
    from empathic_lora.lm.decoding import GenerationSettings, generate_replies
    from empathic_lora.session import trained_model

    trained = trained_model.load(tiny_ckpt, device="cpu")
    formatter, settings = Formatter(trained.tokenizer, trained.default_history_turns()), GenerationSettings(max_new_tokens=12)
    probes = PROBES[:3]
    replies = roll_out(trained.model, formatter, settings, probes)
    assert [len(r) for r in replies] == [len(p) for p in probes]
    # The third turn of the first probe, prompted alone with the two replies the roll-out gave before it.
    context = [Turn("speaker", probes[0][0]), Turn("listener", replies[0][0]), Turn("speaker", probes[0][1]),
               Turn("listener", replies[0][1]), Turn("speaker", probes[0][2])]
    assert generate_replies(trained.model, formatter, [context], settings) == [replies[0][2]]


def _score(*args: str):
    from conftest import run_main

    from empathic_lora.errors import run_cli
    from empathic_lora.score import main

    return run_main(lambda argv: run_cli(lambda: main(list(argv))), *args)


def test_repeated_turns_name_the_first_earlier_equal_reply() -> None:
    from empathic_lora.evaluate.repetition_probe import records, repeated_turns

    assert repeated_turns(["Oh no.", "How so?", "oh NO!", "How so", "Oh no"]) == [None, None, 0, 1, 0]
    lines = records([["Oh no.", "oh no"]], [("first", "second")])
    assert lines == [{"conversation": 1, "turn": 1, "message": "first", "reply": "Oh no.", "repeats": None},
                     {"conversation": 1, "turn": 2, "message": "second", "reply": "oh no", "repeats": 1}]


def test_the_probe_command_reports_the_rate_and_the_repeated_replies_of_a_checkpoint(tmp_path: Path, tiny_ckpt: Path) -> None:
    from empathic_lora.conversation import Formatter, Turn
    from empathic_lora.evaluate.repetition_probe import PROBES, normalized, repetition_rate
    from empathic_lora.lm.decoding import GenerationSettings, generate_replies
    from empathic_lora.session import trained_model

    out = tmp_path / "probe.jsonl"
    result = _score("--probe", "--checkpoint", str(tiny_ckpt.parent.parent), "--device", "cpu", "--max_new_tokens", "16",
                    "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(line["conversation"], line["turn"], line["message"]) for line in lines] == [
        (c + 1, t + 1, message) for c, probe in enumerate(PROBES) for t, message in enumerate(probe)]
    replies = [[line["reply"] for line in lines if line["conversation"] == c + 1] for c in range(len(PROBES))]
    # The last turn's replies are the loaded checkpoint's, with its own context window (4 turns of
    # the 7 so far) and chat's greedy decoding, given the conversation as the file records it.
    trained = trained_model.load(tiny_ckpt, device="cpu")
    contexts = [[turn for t in range(4) for turn in (Turn("speaker", probe[t]), Turn("listener", said[t]))][:-1]
                for probe, said in zip(PROBES, replies)]
    formatter = Formatter(trained.tokenizer, trained.default_history_turns())
    assert trained.default_history_turns() == 4
    settings = GenerationSettings(max_new_tokens=16)
    assert generate_replies(trained.model, formatter, contexts, settings) == [said[3] for said in replies]
    printed = result.stdout.splitlines()
    repeated = [line for line in lines if line["repeats"] is not None]
    assert printed[0].startswith(f"repetition rate {repetition_rate(replies):.3f}: {len(repeated)} of 30 replies")
    assert len(printed) == 1 + len(repeated)
    for shown, line in zip(printed[1:], repeated):
        assert shown == (f"conversation {line['conversation']}, turn {line['turn']} (repeats turn {line['repeats']}): "
                         f"{line['message']!r} -> {line['reply']!r}")
        assert normalized(line["reply"]) == normalized(replies[line["conversation"] - 1][line["repeats"] - 1])

    again = _score("--probe", "--checkpoint", str(tiny_ckpt), "--out", str(out))
    assert again.returncode == 2 and again.stderr.strip() == f"error: --out {out}: exists; pass --force to replace it"


def test_the_probe_command_refuses_a_missing_or_bad_checkpoint_in_one_line(tmp_path: Path) -> None:
    missing = _score("--probe", "--checkpoint", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "x.jsonl"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "none.ckpt" in missing.stderr
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    broken = _score("--probe", "--checkpoint", str(bad))
    assert broken.returncode == 2 and broken.stderr.startswith("error: ") and "bad.ckpt" in broken.stderr
    for result in (missing, broken):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "x.jsonl").exists() and bad.read_bytes() == b"not a checkpoint"
    no_checkpoint = _score("--probe")
    assert no_checkpoint.returncode == 2 and "the following arguments are required: --checkpoint" in no_checkpoint.stderr


def test_the_classifier_trains_inside_a_test_loop(classifier: ReplyEmotionClassifier, tmp_path: Path) -> None:
    """`train.py test` scores in inference mode, where its first use trains the classifier."""
    with torch.inference_mode():
        trained_there = ReplyEmotionClassifier.load_or_train("builtin:sample", tmp_path)
    torch.testing.assert_close(trained_there.weight, classifier.weight)
    assert trained_there.ceiling == classifier.ceiling
