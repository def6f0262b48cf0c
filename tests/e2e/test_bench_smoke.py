"""The benchmarks run end to end and report every field (numbers not judged)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import assert_one_line_error, run_python

SCRIPT = "bench/train_throughput.py"
FIELDS = {"examples_per_s", "target_tokens_per_s", "padded_tokens_per_s", "peak_rss_mb"}


def test_two_steps_of_each_implementation_report_every_field(ed_dir: Path, distilgpt2_dir: Path) -> None:
    result = run_python(
        SCRIPT, "--model", str(distilgpt2_dir), "--random-init", "--data-dir", str(ed_dir), "--format", "seed",
        "--steps", "2", "--warmup", "1", "--batch-size", "2", "--max-length", "64", "--precision", "32-true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    project, recipe, ratio = (json.loads(line) for line in result.stdout.strip().splitlines())
    assert (project["implementation"], recipe["implementation"]) == ("project", "recipe")
    for line in (project, recipe):
        assert FIELDS <= line.keys(), line
        assert all(line[key] > 0 for key in FIELDS), line
        assert line["steps"] == 2 and line["batch_size"] == 2 and line["precision"] == "32-true"
    # The recipe pads every example to --max-length; the project pads a batch to its longest only.
    assert abs(recipe["padded_tokens_per_s"] / recipe["examples_per_s"] - 64) < 0.5
    assert project["padded_tokens_per_s"] / project["examples_per_s"] < 64
    assert FIELDS <= ratio.keys()
    for key in FIELDS:
        assert abs(ratio[key] - project[key] / recipe[key]) <= 0.01 * ratio[key] + 1e-3, key


def test_bad_step_count_is_one_line_error(ed_dir: Path, distilgpt2_dir: Path) -> None:
    result = run_python(SCRIPT, "--model", str(distilgpt2_dir), "--data-dir", str(ed_dir), "--steps", "0")
    assert_one_line_error(result, "--steps 0")


def test_quickstart_replies_table_decodes_as_chat(tiny_ckpt: Path) -> None:
    beams = run_python("bench/quickstart_replies.py", "--checkpoint", str(tiny_ckpt), "--no-zero-shot", "--num_beams", "2")
    assert beams.returncode == 0, beams.stderr[-2000:]
    rows = [line for line in beams.stdout.splitlines() if line.startswith("| I") or line.startswith("| My")]
    assert len(rows) == 10 and all("(not run)" in row for row in rows)
    assert_one_line_error(run_python("bench/quickstart_replies.py", "--checkpoint", str(tiny_ckpt), "--num_beams", "0"), "--num_beams")
