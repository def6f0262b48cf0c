"""JSON Lines, read and written one way for every file the project keeps in it (samples.jsonl,
preference pairs, the repetition probe's replies).

Records are split on "\\n" only: `json.dumps(ensure_ascii=False)` leaves U+2028, U+0085 and other
line separators in a record's text as they are, and `str.splitlines` would cut the record there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
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


def line(value: Any) -> str:
    """One record as its line: non-ASCII text kept as it is, which `records` reads back."""
    return json.dumps(value, ensure_ascii=False) + "\n"


def check_writable(path: Path, force: bool, flag: str = "--out") -> None:
    """A `UserError` naming `flag` if `path` exists (unless `force`) or its directory does not:
    a file the user made is never replaced by accident."""
    if path.exists() and not force:
        raise UserError(f"{flag} {path}: exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise UserError(f"{flag} {path}: its directory does not exist")


def write(path: str | Path, values: Iterable[Any], force: bool = False, flag: str = "--out") -> None:
    """A new JSON Lines file (`check_writable` first), written beside it and renamed into place so
    that an interrupted write leaves no half file under its name."""
    path = Path(path)
    check_writable(path, force, flag)
    staging = path.with_name(f".{path.name}.tmp")
    with staging.open("w", encoding="utf-8") as f:
        for value in values:
            f.write(line(value))
    staging.replace(path)
