"""The study: which items there are, which run's reply is shown first, and in what order.

A study is built once from two runs' `samples.jsonl` files and then stored in the database
(`storage.py`), so that the report needs nothing but the database. Everything an annotator sees is
decided here by seeded hashes, never by the server's state, so a restarted server shows everyone
the same items in the same order with the same sides.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from empathic_lora.errors import UserError
from empathic_lora.evaluate import samples_file
from empathic_lora.paths import newest_run_file

DEFAULT_QUESTIONS = (
    "Which reply is more empathetic?",
    "Which reply is more relevant to what was said?",
    "Which reply is more fluent?",
)
ItemKind = Literal["pair", "check"]
Side = Literal["a", "b"]
# Study format version: a database from another version is refused rather than misread.
VERSION = 1


@dataclass(frozen=True)
class Sample:
    stage: str
    emotion: str
    context: str  # rendered by conversation.render
    reference: str
    reply: str


@dataclass(frozen=True)
class Item:
    """One thing to judge. For a pair, `a` and `b` are the two runs' replies; for an attention
    check, `a` is the real reference reply and `b` a broken one, so the right answer is always `a`."""

    id: str  # opaque: it must not tell an annotator which items are checks
    kind: ItemKind
    stage: str
    emotion: str
    context: str
    a: str
    b: str


@dataclass(frozen=True)
class Study:
    names: tuple[str, str]  # the runs behind `a` and `b`; never sent to a browser
    questions: tuple[str, ...]
    seed: int
    attention_rate: float
    items: tuple[Item, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # contexts in only one file, per side

    @property
    def fingerprint(self) -> str:
        """What makes two studies the same: items, questions and settings, not where the files were."""
        body = {key: value for key, value in self.to_json().items() if key not in ("names", "skipped")}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Study:
        if data.get("version") != VERSION:
            raise ValueError(f"study format version {data.get('version')!r}, expected {VERSION}")
        return cls(
            names=tuple(data["names"]), questions=tuple(data["questions"]), seed=int(data["seed"]),
            attention_rate=float(data["attention_rate"]), items=tuple(Item(**item) for item in data["items"]),
            skipped=dict(data["skipped"]),
        )

    @cached_property
    def by_id(self) -> dict[str, Item]:
        return {item.id: item for item in self.items}

    def order(self, annotator: str) -> list[Item]:
        """The annotator's items, shuffled by a seed of their own: checks land anywhere, and two
        annotators do not share position effects."""
        items = list(self.items)
        random.Random(f"{self.seed}:order:{annotator}").shuffle(items)
        return items

    def first(self, annotator: str, item_id: str) -> Side:
        """Which side is shown as reply 1 to this annotator for this item (a seeded coin)."""
        digest = hashlib.sha256(f"{self.seed}:side:{annotator}:{item_id}".encode()).digest()
        return "a" if digest[0] & 1 else "b"


def load_samples(path: Path, flag: str) -> dict[tuple[str, str], Sample]:
    """A run's samples of its newest evaluation (`samples_file`: one consistent model state),
    keyed by (split, context)."""
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such samples file (a `train.py test` run writes samples.jsonl in its run directory)")
    keys = [field.name for field in fields(Sample)]
    samples: dict[tuple[str, str], Sample] = {}
    for record in samples_file.newest_evaluation(samples_file.read(path, keys, f"{flag} {path}")):
        sample = Sample(**{key: record[key] for key in keys})
        if not sample.context:
            raise UserError(f"{flag} {path}: a samples line has an empty context")
        samples[(sample.stage, sample.context)] = sample
    if not samples:
        raise UserError(f"{flag} {path}: holds no samples")
    return samples


def _opaque_id(seed: int, kind: ItemKind, sample: Sample) -> str:
    return hashlib.sha256(json.dumps([seed, kind, sample.stage, sample.context]).encode()).hexdigest()[:16]


# Shuffling a short reply can leave it fluent ("You so are right."): a broken reply is made from
# one at least this long, when the study has one.
BROKEN_MIN_WORDS = 8


def _broken(donors: Sequence[str], rng: random.Random) -> str:
    """Another conversation's reply with its words shuffled: off topic and not fluent, so the real
    reply wins every default question."""
    long_enough = [text for text in donors if len(text.split()) >= BROKEN_MIN_WORDS]
    words = (rng.choice(long_enough) if long_enough else max(donors, key=lambda text: len(text.split()))).split()
    rng.shuffle(words)
    return " ".join(words)


def attention_checks(pairs: Sequence[Sample], rate: float, seed: int) -> list[Item]:
    """Checks making up `rate` of all items (at least one when rate > 0): a paired context with
    its real reference reply against a broken one."""
    if rate <= 0:
        return []
    count = min(len(pairs), max(1, round(len(pairs) * rate / (1 - rate))))
    rng = random.Random(f"{seed}:checks")
    chosen = sorted(rng.sample(range(len(pairs)), count))
    checks = []
    for i in chosen:
        sample = pairs[i]
        donors = [other.reference for j, other in enumerate(pairs) if j != i] or [sample.reference]
        checks.append(Item(_opaque_id(seed, "check", sample), "check", sample.stage, sample.emotion, sample.context,
                           a=sample.reference, b=_broken(donors, rng)))
    return checks


def samples_path(path: Path) -> Path:
    """The samples file that `path` names: the file, its run directory, or the
    `--trainer.default_root_dir` above it (its newest run), as `score` takes a run."""
    if not path.is_dir() or (path / samples_file.SAMPLES_FILE).is_file():
        return path / samples_file.SAMPLES_FILE if path.is_dir() else path
    return newest_run_file(path, samples_file.SAMPLES_FILE) or path / samples_file.SAMPLES_FILE


def build_study(
    a: Path, b: Path, questions: Sequence[str] = DEFAULT_QUESTIONS, attention_rate: float = 0.1, seed: int = 0,
    flags: tuple[str, str] = ("--a", "--b"),
) -> Study:
    """Pair the two runs' replies by identical split and context; contexts in one file only are
    skipped and counted."""
    if not 0 <= attention_rate <= 0.5:
        raise UserError(f"--attention-rate {attention_rate}: must be between 0 and 0.5")
    if not questions or any(not q.strip() for q in questions) or len(set(questions)) != len(questions):
        raise UserError(f"--question {list(questions)}: need at least one question, each non-empty and distinct")
    a, b = samples_path(a), samples_path(b)
    samples_a = load_samples(a, flags[0])
    samples_b = load_samples(b, flags[1])
    shared = [key for key in samples_a if key in samples_b]
    if not shared:
        raise UserError(
            f"{flags[0]} {a} and {flags[1]} {b} share no context: were both tested on the same split "
            "with the same --model.num_generation_samples and --data settings?"
        )
    pairs = [samples_a[key] for key in shared]
    items = [
        Item(_opaque_id(seed, "pair", sample), "pair", sample.stage, sample.emotion, sample.context,
             a=sample.reply, b=samples_b[key].reply)
        for key, sample in zip(shared, pairs)
    ]
    # A run is named by its directory; two files in one directory by their own paths.
    names = (str(a.parent), str(b.parent)) if a.parent != b.parent else (str(a), str(b))
    return Study(
        names=names, questions=tuple(q.strip() for q in questions), seed=seed,
        attention_rate=attention_rate, items=tuple(items + attention_checks(pairs, attention_rate, seed)),
        skipped={"a": len(samples_a) - len(shared), "b": len(samples_b) - len(shared)},
    )
