"""JSON Lines, read one way for every file the project keeps in it (samples.jsonl, preference pairs).

Records are split on "\\n" only: `json.dumps(ensure_ascii=False)` leaves U+2028, U+0085 and other
line separators in a record's text as they are, and `str.splitlines` would cut the record there.
"""

from __future__ import annotations

import json
from typing import Any

from empathic_lora.errors import UserError


def records(text: str, where: str) -> list[tuple[int, Any]]:
    """(line number, value) of every non-blank line of `text`; a `UserError` naming `where` and the
    line of the first that is not JSON."""
    found = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            found.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise UserError(f"{where}:{number}: not JSON ({error.msg})") from None
    return found
