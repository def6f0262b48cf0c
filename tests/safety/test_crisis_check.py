"""The crisis check: each category fires on how people write it, its look-alikes do not, negation and
third-person reports, the user's phrase file, the committed evaluation set's targets, and the
optional semantic layer."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from empathic_lora.errors import UserError
from empathic_lora.lm import sentence_encoder
from empathic_lora.safety import crisis_check, learned_layer, semantic_layer
from empathic_lora.safety.crisis_check import CrisisCheck, normalize, sentences

CHECK = CrisisCheck()
# The benchmark is a script, not part of the package: its metric is loaded from its file.
spec = importlib.util.spec_from_file_location("crisis_check", ROOT / "bench" / "crisis_check.py")
bench = sys.modules["crisis_check"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

# Messages for each category, written apart from bench/crisis_set (none of them is in it).
FIRES = {
    "direct": ["honestly i want to kill myself", "I've decided to end my life on Sunday", "i just wanna die",
               "been having thoughts of suicide again", "i'm finally going to end it"],
    "passive": ["I can't go on anymore", "my family would be better off without me", "I hope I never wake up",
                "there's no point in living", "i don't want to be alive anymore"],
    "plan": ["I've been hoarding my meds", "i'm going to jump off the overpass after work",
             "I looked up painless ways to die", "I already know how I'm going to do it"],
    "means": ["i swallowed a whole bottle of advil", "there's a loaded gun in my drawer and the gun is loaded",
              "I stood on the edge of the bridge for an hour", "i keep staring at my sleeping pills"],
    "self_harm": ["I slit my wrists last night", "i've been cutting again", "I burned my arm on purpose",
                  "the urge to cut is back", "i hit myself until I bruised"],
    "farewell": ["I wrote goodbye letters to my kids", "please look after my dog when I'm gone",
                 "you won't hear from me again", "I've been giving away my things"],
    "slang": ["kms", "gonna unalive myself", "im so suicidle", "thinking abt k*lling myself", "i jus wanna d!e"],
}
# Look-alikes of each category that signal no risk.
QUIET = {
    "direct": ["this commute is killing me", "I'm dying to see the finale", "I'd rather die than run a marathon",
               "my phone died again"],
    "passive": ["I can't go on the school trip", "I don't want to wake up early tomorrow", "I'm tired of this job"],
    "plan": ["I'm going to jump into the lake", "we went bungee jumping off a bridge", "I need to collect my meds from the pharmacy"],
    "means": ["I took two ibuprofen for my headache", "I bought a rope for the climbing gym", "we went to the shooting range"],
    "self_harm": ["I cut myself shaving", "I burned my hand on the stove", "I hurt myself lifting weights at the gym"],
    "farewell": ["I said goodbye to my coworkers since I'm leaving the company", "I gave away my old clothes to charity",
                 "goodbye everyone, see you after the holidays"],
    "slang": ["my kid's school is doing a musical", "the skateboard ramp at the park"],
}


@pytest.mark.parametrize(("category", "message"), [(c, m) for c, ms in FIRES.items() for m in ms])
def test_each_category_fires(category: str, message: str) -> None:
    hits = CHECK.hits(message)
    assert CHECK.matches(message), message
    assert category in {hit.category for hit in hits} or category == "slang", hits  # slang may spell out another category


@pytest.mark.parametrize("message", [m for ms in QUIET.values() for m in ms])
def test_look_alikes_do_not_fire(message: str) -> None:
    assert not CHECK.matches(message), CHECK.hits(message)


@pytest.mark.parametrize(("message", "fires"), [
    ("I would never kill myself, I just need to vent", False),
    ("I'm not suicidal, just exhausted", False),
    ("I don't want to die", False),
    ("I don't want to live", True),                               # the negation is what makes it a crisis
    ("I'm not okay, I want to die", True),                        # a negation elsewhere in the sentence does not count
    ("I would never kill myself. But I wish I was dead", True),   # only its own sentence is negated
    ("thoughts of suicide have never crossed my mind", False),
])
def test_negation(message: str, fires: bool) -> None:
    assert CHECK.matches(message) is fires, CHECK.hits(message)


@pytest.mark.parametrize(("message", "fires"), [
    ("my friend said she wants to die", True),
    ("my brother told me he's going to kill himself", True),
    ("my roommate cuts herself", True),
    ("I watched a documentary about suicide prevention for class", False),
    ("the main character in the novel kills himself", False),
    ("my uncle died by suicide when I was little", False),     # a loss reported, not a risk now
    ("I read an article about suicide and now I feel suicidal", True),  # a topical sentence can still speak of oneself
])
def test_third_person_and_topical(message: str, fires: bool) -> None:
    assert CHECK.matches(message) is fires, CHECK.hits(message)


def test_normalization_undoes_censoring_and_texting() -> None:
    assert normalize("I can’t go on—k*ll, su1cide, abt it") == " i cant go on kill suicide about it "


def test_user_phrases_are_added_to_the_builtin_patterns(tmp_path: Path) -> None:
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("# ours\nquiero morir  # Spanish\n\nje veux mourir\n", encoding="utf-8")
    added = CrisisCheck.from_file(phrases, "call 024")
    assert added.message == "call 024" and added.phrases == ["quiero morir", "je veux mourir"]
    assert added.matches("Ya no puedo, QUIERO MORIR.") and added.matches("I want to kill myself")
    only = crisis_check.build(phrases, phrases_only=True, semantic="auto")
    assert only.matches("je veux mourir") and not only.matches("I want to kill myself")
    assert only.layers() == "your phrases" and only.semantic is None


def test_bad_phrase_file_and_flags_are_one_line_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(UserError, match="holds no phrase"):
        CrisisCheck.from_file(empty)
    with pytest.raises(UserError, match=r"--crisis_phrases .*missing.txt is unreadable"):
        CrisisCheck.from_file(tmp_path / "missing.txt")
    with pytest.raises(UserError, match="--crisis_phrases_only needs --crisis_phrases FILE"):
        crisis_check.build(phrases_only=True)


def test_the_committed_set_meets_the_targets_with_the_patterns_alone() -> None:
    examples = bench.load_set()
    crisis = [e for e in examples if e.crisis]
    assert len(crisis) >= 150 and len(examples) - len(crisis) >= 150
    assert {e.category for e in crisis} >= {"direct", "passive", "plan", "means", "self_harm", "farewell", "slang", "others"}
    score = bench.evaluate(CHECK.matches, examples).parts["all"]
    assert score.recall >= bench.TARGET_RECALL and score.false_alarm_rate <= bench.TARGET_FALSE_ALARMS, score


def test_a_set_file_without_categories_is_refused(tmp_path: Path) -> None:
    for name in (name for files in bench.PARTS.values() for name in files):
        (tmp_path / name).write_text("# direct\nI want to die\n")
    (tmp_path / "negatives.txt").write_text("no header here\n")
    with pytest.raises(UserError, match="negatives.txt: message before any '# category' line"):
        bench.load_set(tmp_path)


@pytest.fixture(scope="module")
def layer() -> semantic_layer.SemanticLayer:
    if not semantic_layer.available():
        message = 'the crisis-semantic extra is missing (pip install -e ".[dev]" installs it)'
        pytest.fail(message) if os.environ.get("CI", "").lower() == "true" else pytest.skip(message)
    return semantic_layer.SemanticLayer(sentences)


def test_semantic_layer_adds_paraphrases_and_only_adds(layer: semantic_layer.SemanticLayer) -> None:
    both = CrisisCheck(semantic=layer)
    paraphrase = "my existence is pointless and I want it over"
    assert not CHECK.matches(paraphrase) and layer(paraphrase) and both.matches(paraphrase)
    assert both.layers() == "built-in patterns + semantic layer (all-MiniLM-L6-v2)"
    for harmless in ("this traffic is killing me", "I cut my finger while cooking", "I'm so stressed about exams"):
        assert not both.matches(harmless), harmless
    assert both.matches("kms")  # a pattern hit needs no embedding


# The learned part of the layer (learned_layer.py). Written for this test, in none of bench/crisis_set's
# files; the patterns and the exemplars miss each of them.
PARAPHRASES = [
    "honestly i have stopped seeing any future where i am still here",
    "The bus was late again. Honestly I have stopped seeing any future where I am still here. Anyway, dinner was nice.",
]
HARMLESS = ["I sliced my thumb open on a tin of beans", "that exam absolutely murdered me",
            "my nan passed away peacefully in her sleep", "we discussed suicide prevention in today's seminar"]


def test_the_learned_layer_adds_what_the_patterns_miss(layer: semantic_layer.SemanticLayer) -> None:
    check = CrisisCheck(semantic=layer)
    for text in PARAPHRASES:
        exemplars_miss = not layer.close(layer.encode(sentences(text)))
        assert not CrisisCheck().matches(text) and exemplars_miss and check.matches(text), text
    for text in HARMLESS:
        assert not check.matches(text), text


def test_the_window_hands_the_joined_turns_to_the_learned_layer(layer: semantic_layer.SemanticLayer) -> None:
    check = CrisisCheck(semantic=layer)
    turns = ["i keep thinking about it", "not being here anymore"]
    watch = check.watch()
    assert [watch.hear(turn).notice for turn in turns][-1]
    assert not any(check.matches(turn) for turn in turns)


def test_build_installs_the_learned_layer_with_the_extra(layer: semantic_layer.SemanticLayer) -> None:
    check = crisis_check.build(semantic="on")
    assert isinstance(check.semantic, semantic_layer.SemanticLayer) and check.semantic.learned == learned_layer.Weights.load()


def test_auto_without_the_extra_is_patterns_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sentence_encoder, "available", lambda: False)
    check = crisis_check.build(semantic="auto")
    assert check.semantic is None and check.layers() == "built-in patterns"
    with pytest.raises(UserError, match=r"crisis-semantic extra: pip install"):
        crisis_check.build(semantic="on")


# -- the conversation: the speaker's recent turns read together ------------------------------------
def test_a_signal_split_across_turns_is_caught_once_and_the_notice_stays() -> None:
    watch = CHECK.watch()
    verdicts = [watch.hear(turn) for turn in ("i just want to", "die", "what's for dinner", "ok", "fine")]
    assert [v.signal for v in verdicts] == [False, True, False, False, False]  # the window does not re-fire
    assert [v.notice for v in verdicts] == [False, True, True, True, True]  # the line stays after the window moved on
    watch.reset()
    assert watch.hear("what's for dinner") == crisis_check.Verdict(signal=False, notice=False)


@pytest.mark.parametrize(("turns", "fires"), [
    (["I have everything I need now.", "I will not be here on Monday."], True),  # two weak cues of different kinds
    (["I have everything I need now.", "I will be at my parents' on Monday."], False),
    (["I will not be here on Monday.", "the office is closed"], False),  # one kind alone
    (["honestly i dont want to", "be alive anymore"], True),
    (["i just want to", "die my hair purple"], False),
    (["I want to kill", "time before the concert"], False),
    (["i just want to", "a", "b", "die"], False),  # "i just want to" has left the window of 3
])
def test_the_window_reads_turns_together(turns: list[str], fires: bool) -> None:
    assert crisis_check.WINDOW == 3
    watch = CHECK.watch()
    assert [watch.hear(turn) for turn in turns][-1].notice is fires, turns


def test_a_long_turn_is_joined_by_its_edges_only() -> None:
    page = "I feel fine. " * 100_000
    assert len(crisis_check._edges(page)) <= 2 * crisis_check.JOIN_CHARS + 5
    watch = CHECK.watch()
    assert not watch.hear(page + "i just want to").signal and watch.hear("die").signal  # the join is at the edges


def test_the_committed_conversations_are_read_together() -> None:
    conversations = bench.load_set(parts={"conversations": bench.CONVERSATIONS})
    assert sum(e.crisis for e in conversations) >= 15 and sum(not e.crisis for e in conversations) >= 15
    windowed = bench.evaluate(bench.conversation_flagged(CHECK), conversations).parts["all"]
    alone = bench.evaluate(bench.any_turn_alone(CHECK.matches), conversations).parts["all"]
    # Measured: recall 0.93, false alarms 0.07 (one twin: a will and letters to the kids); each turn alone: 0.47 recall.
    assert windowed.recall >= 0.9 and windowed.false_alarm_rate <= 0.1, windowed
    assert windowed.recall > alone.recall + 0.3, (windowed, alone)
