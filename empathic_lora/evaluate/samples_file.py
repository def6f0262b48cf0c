"""`samples.jsonl`: the replies an evaluation generated, one JSON object per line, beside a run's
metrics. Its one writer and its one reader; the scorer and the human-evaluation study both read it here.

Each validation or test that generates appends one evaluation: lines with `stage`, `epoch`,
`emotion`, `context`, `reference` and `reply`. A file can so hold several evaluations (one per
validation epoch); the newest is the run of lines that share the last line's stage and epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from empathic_lora import jsonl
from empathic_lora.errors import UserError

SAMPLES_FILE = "samples.jsonl"


def append(path: Path, lines: Sequence[dict[str, Any]]) -> None:
    """Append one evaluation's lines to the run's samples file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for line in lines:
            f.write(jsonl.line(line))


def read(path: Path, required: Sequence[str], where: str | None = None) -> list[dict[str, Any]]:
    """Every line of a samples (or any replies) file as a dict; a `UserError` naming `where` (the
    flag and path, default the path) and the line number of the first that is not a JSON object
    with a string value for each `required` key."""
    where = where or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    lines = []
    for number, line in jsonl.records(text, where):
        if not isinstance(line, dict) or not all(isinstance(line.get(key), str) for key in required):
            raise UserError(f"{where}:{number}: not a samples line: expected a JSON object with string {', '.join(map(repr, required))}")
        lines.append(line)
    return lines


def newest_evaluation(lines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines of the newest evaluation: those sharing the last line's stage and epoch (a file
    written by hand, without them, is one evaluation)."""
    if not lines:
        return []
    last = (lines[-1].get("stage"), lines[-1].get("epoch"))
    return [line for line in lines if (line.get("stage"), line.get("epoch")) == last]
