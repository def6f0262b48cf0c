"""The raw-data reader on any bytes (hypothesis): rows, or one UserError naming the file; nothing else."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from empathic_lora.data.raw_csv import FIELDS, read_split
from empathic_lora.errors import UserError

HEADER = ",".join(FIELDS)
# Lines near the real format: the right header, fields that may be empty, hold `_comma_`, quotes or
# odd characters, too few or too many of them, mixed line ends.
FIELD = st.sampled_from(["", "1", "0", "-1", "hit:0_conv:1", "_comma_", '"', "sad", "x" * 3]) | st.text(max_size=12)
LINE = st.lists(FIELD, min_size=0, max_size=10).map(",".join)
NEAR_CSV = st.tuples(st.sampled_from([HEADER, HEADER + ",extra", HEADER.upper(), ""]),
                     st.lists(LINE, max_size=30), st.sampled_from(["\n", "\r\n", "\r"])).map(
    lambda parts: parts[2].join([parts[0], *parts[1]]).encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(content=st.binary(max_size=2000) | NEAR_CSV | st.binary(max_size=200).map(lambda b: HEADER.encode() + b"\n" + b))
@example(content=f"{HEADER}\n".encode() + "a,1,sad,s,0,\ud800,x,y\n".encode("utf-8", "surrogatepass"))  # not UTF-8
@example(content=f"{HEADER}\n\n\n".encode())  # a header and blank lines only
def test_any_bytes_are_parsed_or_one_user_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "train.csv"
        path.write_bytes(content)
        try:
            rows = read_split(path)
        except UserError as error:
            assert str(path) in str(error) and "\n" not in str(error), error
            return
    assert rows, "a split without rows is a UserError"
    for row in rows:
        assert row.conv_id and row.utterance_idx >= 1 and row.utterance == row.utterance.strip() and row.utterance
        assert "_comma_" not in row.utterance and "\n" not in row.utterance
