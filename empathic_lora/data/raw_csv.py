"""Reader for the raw EmpatheticDialogues CSV files.

The official files are not quoted CSV: fields are joined by bare commas, a comma inside text is
the token `_comma_`, and stray `"` characters occur in utterances. A quoting CSV reader would
merge lines, so each line is split on `,` by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from empathic_lora.errors import UserError

log = logging.getLogger(__name__)

FIELDS = ("conv_id", "utterance_idx", "context", "prompt", "speaker_idx", "utterance", "selfeval", "tags")
MAX_MALFORMED_SHARE = 0.01
SAMPLE = "builtin:sample"  # `--data.data_dir builtin:sample`: the hand-written sample shipped in the package
SAMPLE_DIR = Path(__file__).parent / "sample"


@dataclass(frozen=True)
class Row:
    conv_id: str
    utterance_idx: int  # 1-based; odd turns are the speaker, even turns the listener
    emotion: str  # the `context` column: one of 32 emotion labels
    situation: str  # the `prompt` column: the situation the speaker wrote
    utterance: str


def _decode(text: str) -> str:
    return text.replace("_comma_", ",").strip()


def _parse_line(line: str) -> Row | None:
    fields = line.rstrip("\r\n").split(",")
    # The official test split has extra trailing fields on some lines: only the 8 named ones count.
    if len(fields) < len(FIELDS):
        return None
    conv_id, idx, emotion, situation, _speaker, utterance = fields[:6]
    if not conv_id or not idx.isdigit() or int(idx) < 1:
        return None
    utterance = _decode(utterance)
    if not utterance:
        return None
    return Row(conv_id, int(idx), _decode(emotion), _decode(situation), utterance)


def read_split(path: str | Path) -> list[Row]:
    """All well-formed rows of one split file, in file order.

    Malformed lines are skipped with one warning; more than 1% malformed, a missing or non-UTF-8
    file, a wrong header or an empty split is a `UserError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise UserError(f"data file {path} is not UTF-8 text (bad byte at offset {error.start})") from None
    if not lines or lines[0].split(",")[: len(FIELDS)] != list(FIELDS):
        raise UserError(f"data file {path} does not start with the EmpatheticDialogues header {','.join(FIELDS)}")
    rows: list[Row] = []
    malformed: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row = _parse_line(line)
        if row is None:
            malformed.append(number)
        else:
            rows.append(row)
    total = len(rows) + len(malformed)
    if total == 0:
        raise UserError(f"data file {path} has a header but no rows")
    if malformed:
        share = len(malformed) / total
        if share > MAX_MALFORMED_SHARE:
            raise UserError(
                f"data file {path}: {len(malformed)} of {total} lines are malformed ({share:.1%}, more than "
                f"{MAX_MALFORMED_SHARE:.0%}), the first at line {malformed[0]}"
            )
        log.warning("%s: skipped %d malformed line(s), the first at line %d", path, len(malformed), malformed[0])
    return rows
