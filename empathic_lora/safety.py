"""Crisis language: when a message signals a risk of self-harm or suicide, chat still answers and
also shows a short, warm line pointing to people who can help.

The model is a small research model, not a counsellor, so this check is a fixed phrase list rather
than anything learned: predictable, auditable, and easy to change. `python chat.py
--crisis_phrases FILE` replaces the list (one phrase per line, `#` starts a comment) and
`--crisis_message TEXT` the line shown, e.g. to name a local crisis line. Matching ignores case,
punctuation and apostrophes ("don't" = "dont", "self-harm" = "self harm"); a phrase must start at a
word but may end inside one, so "overdose" also catches "overdosed" while "cut myself" does not fire
on "haircut myself". It errs on the side of showing the line: a false alarm costs one kind sentence,
a miss may cost much more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from empathic_lora.errors import UserError

DEFAULT_PHRASES: tuple[str, ...] = (
    "suicide", "suicidal", "kill myself", "killing myself", "end my life", "ending my life", "end it all",
    "take my own life", "taking my own life", "want to die", "wanna die", "wish i was dead", "wish i were dead",
    "better off dead", "dont want to live", "dont want to be alive", "no reason to live", "not worth living",
    "hurt myself", "hurting myself", "harm myself", "self harm", "cut myself", "cutting myself",
    "overdose",
)

DEFAULT_MESSAGE = (
    "It sounds like you may be going through something really painful, and you don't have to face it alone. "
    "If you are thinking about hurting yourself, please reach out now to your local emergency number or a "
    "crisis line (https://findahelpline.com lists them by country), or to someone you trust. "
    "I'm an AI language model, not a therapist, and a person can help in ways I can't."
)


def normalize(text: str) -> str:
    """Lower case, apostrophes dropped, every other non-alphanumeric run one space, padded by spaces."""
    text = re.sub(r"['\u2018\u2019\u02bc`]", "", text.casefold())
    return f" {' '.join(re.sub(r'[^0-9a-z]+', ' ', text).split())} "


class CrisisCheck:
    """Whether a message contains one of the crisis phrases (see the module doc)."""

    def __init__(self, phrases: Iterable[str] = DEFAULT_PHRASES, message: str = DEFAULT_MESSAGE) -> None:
        """
        Args:
            phrases: Phrases that signal a risk of self-harm or suicide.
            message: The line shown after the reply when one matches.
        """
        self.phrases = [p for p in (normalize(p).rstrip() for p in phrases) if p]
        self.message = message

    @classmethod
    def from_file(cls, path: str | Path, message: str = DEFAULT_MESSAGE) -> CrisisCheck:
        """Phrases from a text file, one per line; blank lines and `#` comments are skipped."""
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"--crisis_phrases {path} is unreadable ({error})") from None
        phrases = [line.split("#", 1)[0] for line in lines]
        check = cls(phrases, message)
        if not check.phrases:
            raise UserError(f"--crisis_phrases {path} holds no phrase (one per line, # starts a comment)")
        return check

    def matches(self, text: str) -> bool:
        normalized = normalize(text)
        return any(phrase in normalized for phrase in self.phrases)
