"""Preference pairs in TRL's format, and the EmPO-style pairs built from the data itself.

One JSON object per line with TRL's columns `prompt`, `chosen`, `rejected`, conversational:
`prompt` is the conversation so far as `{"role", "content"}` messages (user = the speaker,
assistant = the listener), `chosen` and `rejected` are each one assistant message. Pairs written
here train in TRL's `DPOTrainer`, and TRL-format pairs from elsewhere train here; TRL's standard
(string) form is read too, its prompt as one speaker turn. `read` and `write` are this format's
only reader and writer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from empathic_lora import jsonl
from empathic_lora.conversation import Turn
from empathic_lora.errors import UserError

ROLES: dict[str, Literal["speaker", "listener"]] = {"user": "speaker", "assistant": "listener"}
OPPOSITE_EMOTION = "builtin:opposite-emotion"  # `--data.pairs builtin:opposite-emotion`: built from the data on the fly

# The 32 labels by valence, the grouping EmPO's opposite-emotion pairs need (docs/metrics.md shows
# the table). The positive/negative split follows the polarity clusters of MIME (Majumder et al.,
# EMNLP 2020), who group EmpatheticDialogues' labels by positivity; labels whose valence depends on
# the situation (a surprise, a memory, an expectation) are `other` and never paired, so that a
# rejected reply is always of the opposite valence, as EmPO (Sotolar et al. 2024) draws it from an
# opposite emotion on Plutchik's wheel.
EMOTION_GROUPS: dict[str, tuple[str, ...]] = {
    "positive": ("caring", "confident", "content", "excited", "faithful", "grateful", "hopeful", "impressed",
                 "joyful", "prepared", "proud", "trusting"),
    "negative": ("afraid", "angry", "annoyed", "anxious", "apprehensive", "ashamed", "devastated", "disappointed",
                 "disgusted", "embarrassed", "furious", "guilty", "jealous", "lonely", "sad", "terrified"),
    "other": ("anticipating", "nostalgic", "sentimental", "surprised"),
}
GROUP_OF = {emotion: group for group, emotions in EMOTION_GROUPS.items() for emotion in emotions}
OPPOSITE_GROUP = {"positive": "negative", "negative": "positive"}


class Example(Protocol):
    """What the builder reads of a `datamodule.Example` (a protocol: the DataModule imports this module)."""

    emotion: str
    context: Sequence[Turn]
    target: str


@dataclass(frozen=True)
class Pair:
    """One preference: the context, the preferred listener reply and the other one."""

    context: tuple[Turn, ...]
    chosen: str
    rejected: str


def to_record(pair: Pair) -> dict[str, Any]:
    """The pair as a TRL conversational preference record."""
    role = {turn_role: message_role for message_role, turn_role in ROLES.items()}
    return {
        "prompt": [{"role": role[t.role], "content": t.text} for t in pair.context],
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
    }


def _reply(value: Any, where: str, key: str) -> str:
    if isinstance(value, str):
        return value
    if (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
            and value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str)):
        return value[0]["content"]
    raise UserError(f"{where}: {key!r} must be one assistant message [{{\"role\": \"assistant\", \"content\": ...}}] or a string")


def _context(value: Any, where: str) -> tuple[Turn, ...]:
    if isinstance(value, str):
        return (Turn("speaker", value),)
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: 'prompt' must be a non-empty list of {{\"role\", \"content\"}} messages or a string")
    turns = []
    for message in value:
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES or not isinstance(message.get("content"), str):
            raise UserError(f"{where}: a prompt message must have a role of {' or '.join(ROLES)} and a string content, got {message!r}"[:300])
        turns.append(Turn(ROLES[role], message["content"]))
    if turns[-1].role != "speaker":
        raise UserError(f"{where}: the prompt must end with the user's (speaker's) turn")
    return tuple(turns)


def from_record(record: Any, where: str) -> Pair:
    if not isinstance(record, dict) or not {"prompt", "chosen", "rejected"} <= set(record):
        raise UserError(f"{where}: expected an object with 'prompt', 'chosen' and 'rejected' (TRL's preference format)")
    return Pair(_context(record["prompt"], where), _reply(record["chosen"], where, "chosen"),
                _reply(record["rejected"], where, "rejected"))


def read(path: str | Path) -> list[Pair]:
    """Every pair of a JSONL file; a `UserError` naming the file and line on anything else."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"pairs file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"pairs file {path} is unreadable ({error})") from None
    pairs = [from_record(record, f"{path}:{number}") for number, record in jsonl.records(text, str(path))]
    if not pairs:
        raise UserError(f"pairs file {path} holds no pairs")
    return pairs


def write(path: str | Path, pairs: Sequence[Pair], force: bool = False) -> None:
    """Write pairs as JSONL, refusing to replace an existing file unless `force`."""
    jsonl.write(path, map(to_record, pairs), force=force)


def opposite_emotion_pairs(examples: Sequence[Example], seed: int = 0) -> list[Pair]:
    """EmPO-style pairs: for each listener turn of a positive (negative) conversation, the chosen
    reply is its reference and the rejected one the listener reply of a random turn from a
    negative (positive) conversation (`EMOTION_GROUPS`); `other` conversations give no pairs.
    Deterministic in `seed`."""
    pools: dict[str, list[str]] = {group: [] for group in OPPOSITE_GROUP}
    for example in examples:
        group = GROUP_OF.get(example.emotion)
        if group in pools:
            pools[group].append(example.target)
    rng = random.Random(seed)
    pairs = []
    for example in examples:
        group = GROUP_OF.get(example.emotion)
        pool = pools.get(OPPOSITE_GROUP.get(group, ""), [])
        if group in OPPOSITE_GROUP and pool:
            pairs.append(Pair(tuple(example.context), example.target, pool[rng.randrange(len(pool))]))
    return pairs
