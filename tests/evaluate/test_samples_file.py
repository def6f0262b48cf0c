"""samples.jsonl's one writer and reader: what the writer writes, the reader reads back whole."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from empathic_lora.evaluate import samples_file


@settings(max_examples=200, deadline=None)
@given(reply=st.text(), epochs=st.integers(min_value=1, max_value=3))
def test_what_is_appended_reads_back_and_the_newest_evaluation_is_the_last_block(reply: str, epochs: int) -> None:
    """Any reply text, line separators such as U+2028 included (json.dumps keeps them raw; a reader
    splitting with str.splitlines cut such a line in two and failed on it)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "samples.jsonl"
        for epoch in range(epochs):
            samples_file.append(path, [{"stage": "val", "epoch": epoch, "reply": reply + "\u2028" + str(epoch),
                                        "reference": "r"}])
        lines = samples_file.read(path, ("reply", "reference"))
        assert [line["reply"] for line in lines] == [reply + "\u2028" + str(e) for e in range(epochs)]
        assert samples_file.newest_evaluation(lines) == [lines[-1]]
