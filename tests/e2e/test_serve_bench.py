"""bench/serve_latency.py runs end to end and reports every field (numbers not judged)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import assert_one_line_error, run_python

SCRIPT = "bench/serve_latency.py"


def test_one_round_of_each_side_reports_every_field(tiny_ckpt: Path) -> None:
    result = run_python(SCRIPT, "--checkpoint", str(tiny_ckpt), "--repeats", "1", "--new-tokens", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    chat, api, ratio = (json.loads(line) for line in result.stdout.strip().splitlines())
    assert (chat["side"], api["side"]) == ("chat", "api")
    for line in (chat, api):
        assert line["first_text_ms"] > 0 and line["tokens_per_s"] > 0 and line["repeats"] == 1
        assert 1 <= line["new_tokens"] <= 8
    assert "note: the replies differ" not in result.stderr  # the same code gives the same reply
    assert abs(ratio["tokens_per_s"] - api["tokens_per_s"] / chat["tokens_per_s"]) < 0.01
    assert abs(ratio["first_text_extra_ms"] - (api["first_text_ms"] - chat["first_text_ms"])) < 0.2
    assert len(ratio["load_1min"]) == 2


def test_bad_repeats_is_one_line_error(tiny_ckpt: Path) -> None:
    assert_one_line_error(run_python(SCRIPT, "--checkpoint", str(tiny_ckpt), "--repeats", "0"), "--repeats 0")
