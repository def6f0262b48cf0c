"""The repetition rate on a multi-turn probe set: does the bot repeat itself within one
conversation ("That is so hard. How are you going to celebrate?" twice in a row, issue 22)?

Single-turn evaluation cannot see this: there every context holds the data's listener turns,
never the bot's. Here the bot answers each speaker turn of a hand-written conversation with its
own earlier replies in the context, as in chat, and a reply counts as a repetition when it equals
(lowercased, whitespace and punctuation aside) one of its earlier replies in that conversation.

`python -m empathic_lora.score --probe --checkpoint RUN` runs it on a trained model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedModel

from empathic_lora.conversation import Formatter, Turn
from empathic_lora.lm.decoding import GenerationSettings, generate_replies

# Ten conversations of four speaker turns, each staying with one situation the way a person
# keeps talking about one thing; written for this probe (the first follows issue 22's example).
PROBES: tuple[tuple[str, ...], ...] = (
    ("My best friend told me she is moving to another country.", "We have always been very close.",
     "I don't know how I'll manage without her.", "She leaves next month."),
    ("I failed my driving test again today.", "It was the third time.", "The examiner said I was too nervous.",
     "I have to wait six weeks to try again."),
    ("My grandmother is in the hospital.", "The doctors say it's her heart.", "I visited her this morning.",
     "She asked me to bring her some photos."),
    ("I got the job I interviewed for last week!", "It pays a lot more than my old one.", "I start on Monday.",
     "I'm a little scared of the new team though."),
    ("Someone scratched my car in the parking lot.", "They didn't leave a note.", "It's a brand new car.",
     "The repair will cost a fortune."),
    ("My dog has been sick for a few days.", "He won't eat anything.", "The vet wants to run more tests.",
     "I keep worrying about the results."),
    ("I finally finished my first marathon.", "It took me almost five hours.", "My legs are so sore today.",
     "I already signed up for the next one."),
    ("My neighbours play loud music every night.", "I asked them nicely to stop.", "They laughed at me.",
     "I haven't slept properly in a week."),
    ("I forgot my sister's birthday.", "She hasn't answered my messages since.", "I sent her flowers today.",
     "I hope she forgives me."),
    ("We adopted a kitten yesterday.", "The kids are thrilled.", "She hid under the sofa all night.",
     "This morning she finally came out to play."),
)


def normalized(reply: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", reply.lower()).split())


def repeated_turns(replies: Sequence[str]) -> list[int | None]:
    """For each reply of one conversation, the index of the first earlier reply it equals
    (`normalized`), or None."""
    first: dict[str, int] = {}
    found = []
    for index, key in enumerate(map(normalized, replies)):
        found.append(first.get(key))
        first.setdefault(key, index)
    return found


def repetition_rate(conversations: Sequence[Sequence[str]]) -> float:
    """The share of replies, from each conversation's second on, equal to an earlier reply of the
    same conversation (`normalized`)."""
    later = [repeat for replies in conversations for repeat in repeated_turns(replies)[1:]]
    return sum(repeat is not None for repeat in later) / len(later) if later else 0.0


def records(replies: Sequence[Sequence[str]], probes: Sequence[Sequence[str]] = PROBES) -> list[dict[str, Any]]:
    """One line per reply (the command's JSON Lines): `conversation` and `turn` (both from 1), the
    speaker's `message`, the bot's `reply`, and `repeats`, the turn whose reply it equals (or null)."""
    return [
        {"conversation": c + 1, "turn": t + 1, "message": message, "reply": reply,
         "repeats": None if repeat is None else repeat + 1}
        for c, (probe, said) in enumerate(zip(probes, replies))
        for t, (message, reply, repeat) in enumerate(zip(probe, said, repeated_turns(said)))
    ]


def report(replies: Sequence[Sequence[str]], probes: Sequence[Sequence[str]] = PROBES) -> list[str]:
    """The rate in a sentence, then each repeated reply with the message it answered."""
    later = sum(max(len(said) - 1, 0) for said in replies)
    repeated = [line for line in records(replies, probes) if line["repeats"] is not None]
    lines = [f"repetition rate {repetition_rate(replies):.3f}: {len(repeated)} of {later} replies (each conversation's "
             f"second on, {len(replies)} conversations) repeat an earlier reply of their conversation"]
    lines += [f"conversation {line['conversation']}, turn {line['turn']} (repeats turn {line['repeats']}): "
              f"{line['message']!r} -> {line['reply']!r}" for line in repeated]
    return lines


def roll_out(
    model: PreTrainedModel, formatter: Formatter, settings: GenerationSettings, probes: Sequence[Sequence[str]] = PROBES
) -> list[list[str]]:
    """The bot's replies to every speaker turn of every probe, each generated with the
    conversation so far (its own earlier replies included); one batch per turn, all conversations."""
    contexts: list[list[Turn]] = [[] for _ in probes]
    replies: list[list[str]] = [[] for _ in probes]
    for turn in range(max(len(probe) for probe in probes)):
        active = [i for i, probe in enumerate(probes) if turn < len(probe)]
        for i in active:
            contexts[i].append(Turn("speaker", probes[i][turn]))
        for i, reply in zip(active, generate_replies(model, formatter, [contexts[i] for i in active], settings)):
            contexts[i].append(Turn("listener", reply))
            replies[i].append(reply)
    return replies
