"""The allowed range of every numeric knob, as types that LightningCLI checks while it parses.

A value out of range is then refused before anything is loaded, in one line naming the flag
(`error: --model.r: ...`), and `--help`/`--print_config` show the range in the type's name.
jsonargparse ships the common ranges; the few it lacks are made with its `restricted_number_type`.
"""

from __future__ import annotations

from jsonargparse.typing import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

# Dropout of 1 would zero every input: 0 <= p < 1.
Probability = restricted_number_type("ZeroToBelowOne", float, [(">=", 0), ("<", 1)])
# The shortest example that still holds a response cue, a word of reply and the eos token.
MIN_MAX_LENGTH = 8
MaxLength = restricted_number_type(f"IntAtLeast{MIN_MAX_LENGTH}", int, (">=", MIN_MAX_LENGTH))

__all__ = [
    "MaxLength", "NonNegativeFloat", "NonNegativeInt", "PositiveFloat", "PositiveInt", "Probability",
]
