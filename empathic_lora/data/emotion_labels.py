"""The 32 emotion labels of EmpatheticDialogues (the `context` column of the raw files)."""

from __future__ import annotations

from collections.abc import Sequence

from empathic_lora.errors import UserError

# The 32 labels of EmpatheticDialogues, sorted: a class index means the same label in every run,
# and checkpoints record the list so that a changed order is refused instead of misread.
EMOTIONS: tuple[str, ...] = (
    "afraid", "angry", "annoyed", "anticipating", "anxious", "apprehensive", "ashamed", "caring",
    "confident", "content", "devastated", "disappointed", "disgusted", "embarrassed", "excited",
    "faithful", "furious", "grateful", "guilty", "hopeful", "impressed", "jealous", "joyful", "lonely",
    "nostalgic", "prepared", "proud", "sad", "sentimental", "surprised", "terrified", "trusting",
)
EMOTION_INDEX = {name: i for i, name in enumerate(EMOTIONS)}


def label_ids(emotions: Sequence[str], source: str) -> list[int]:
    """Class indices of emotion labels; a label outside the 32 is a `UserError` naming `source`."""
    unknown = sorted({e for e in emotions if e not in EMOTION_INDEX})
    if unknown:
        raise UserError(
            f"{source} has emotion label(s) {', '.join(map(repr, unknown[:3]))} outside the 32 of "
            f"EmpatheticDialogues ({', '.join(EMOTIONS[:3])}, ...)"
        )
    return [EMOTION_INDEX[e] for e in emotions]


def check_labels(recorded: Sequence[str] | None, where: str) -> None:
    """Refuse a head trained on another label list (or order) than this version's `EMOTIONS`."""
    if recorded is not None and tuple(recorded) != EMOTIONS:
        raise UserError(f"{where} has an emotion head over other labels than this empathic_lora's 32: {list(recorded)[:4]}...")
