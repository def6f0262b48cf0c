"""bench/serve_load.py runs end to end with a few clients for a few seconds (numbers not judged)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import assert_one_line_error, run_python

SCRIPT = "bench/serve_load.py"


def test_a_short_load_is_answered_or_refused_and_reports_every_field(tiny_ckpt: Path) -> None:
    # 4 clients on a queue of 1: some requests wait, some are refused, a third hang up mid-stream.
    result = run_python(SCRIPT, "--checkpoint", str(tiny_ckpt), "--clients", "4", "--seconds", "4",
                        "--max-requests", "120", "--new-tokens", "4", "--queue_size", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    requests, latency, memory = (json.loads(line) for line in result.stdout.strip().splitlines())
    assert requests["failed"] == 0 and requests["pending_after"] == 0
    assert requests["plain"] and requests["streamed"] and requests["left"]
    assert requests["requests"] == sum(requests[k] for k in ("plain", "streamed", "left", "refused", "failed"))
    assert 0 < latency["latency_p50_ms"] <= latency["latency_p95_ms"] and latency["answered_per_s"] > 0
    assert memory["rss_mb_at_end"] > 0 and len(memory["load_1min"]) == 2
    if requests["requests"] >= 100:
        assert memory["rss_mb_after_100"] > 0
    assert memory["leak"] is None  # fewer than 1,000 requests: no verdict


def test_bad_clients_is_one_line_error(tiny_ckpt: Path) -> None:
    assert_one_line_error(run_python(SCRIPT, "--checkpoint", str(tiny_ckpt), "--clients", "0"), "--clients 0")
