"""Evaluation through the CLI: perplexities, reply metrics, samples.jsonl, YAML-added metrics,
zero-shot, generation during fit, and the docs/metrics.md walk-through run as written."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, assert_one_line_error, run_main
from shared_helpers import logged_values, newest_run, train_error
from torchmetrics import Metric

from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule, Example
from empathic_lora.errors import UserError
from empathic_lora.evaluate.reply_scoring import ALL, fixed_sample
from empathic_lora.train.cli import main
from empathic_lora.train.lora_module import EmpatheticLoRAModule

DEFAULT_KEYS = {f"test/bleu{n}" for n in range(1, 5)} | {
    "test/rougeL_fmeasure", "test/length"} | {f"test/distinct{n}{kind}" for n in (1, 2) for kind in ("", "_field", "_intra")}
QUICKSTART = ["--config", "configs/tiny.yaml", "--trainer.enable_progress_bar", "false"]


class ReplyCount(Metric):
    """A user's metric defined outside the package: how many replies were scored."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: list[str], target: list[str]) -> None:
        self.count += len(preds)

    def compute(self) -> torch.Tensor:
        return self.count


def _samples(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


def test_a_test_run_reports_every_default_metric_and_dumps_samples(tmp_path: Path, ed_dir: Path, distilgpt2_dir: Path) -> None:
    main([
        "test", "--config", "configs/distilgpt2_t4.yaml", "--model.base_model", str(distilgpt2_dir),
        "--model.random_init", "true", "--data.data_dir", str(ed_dir), "--data.max_examples", "40",
        "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--trainer.precision", "32-true",
        "--trainer.limit_test_batches", "2", "--model.num_generation_samples", "4",
        "--model.generation", "{max_new_tokens: 8}", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path),
    ])
    run = newest_run(tmp_path)
    logged = logged_values(run)
    assert DEFAULT_KEYS | {"test/ppl", "test/word_ppl", "test/word_ppl_field", "test/loss"} <= set(logged)
    assert all(math.isfinite(logged[key]) for key in DEFAULT_KEYS)
    assert logged["test/ppl"] == pytest.approx(math.exp(logged["test/loss"]), rel=1e-4)
    assert logged["test/word_ppl"] > logged["test/ppl"] > 1  # fewer words than tokens, same total NLL
    # NLTK splits punctuation and clitics off: more words than whitespace words for the same NLL
    assert logged["test/word_ppl"] > logged["test/word_ppl_field"] > 1
    samples = _samples(run)
    assert len(samples) == 4
    references = {e.target for e in fixed_sample(_test_examples(ed_dir, distilgpt2_dir), 4)}
    assert {s["reference"] for s in samples} == references
    for sample in samples:
        assert sample["stage"] == "test" and sample["emotion"] and sample["context"].endswith("<|response|>")
        assert isinstance(sample["reply"], str)
        assert "<|prompt|>" not in sample["reply"] and "<|response|>" not in sample["reply"]
    assert 0 <= logged["test/length"] <= 8  # at most max_new_tokens tokens, so at most 8 words


def _test_examples(ed_dir: Path, model_dir: Path) -> list[Example]:
    from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule

    return EmpatheticDialoguesDataModule(str(ed_dir), format="seed", max_examples=40).examples("test")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch tiny run that generates at the second epoch's validation only."""
    root = tmp_path_factory.mktemp("tiny")
    main([
        "fit", *QUICKSTART, "--trainer.max_epochs", "2", "--model.generation_every_n_epochs", "2",
        "--model.num_generation_samples", "3", "--trainer.default_root_dir", str(root),
    ])
    return newest_run(root)


def test_generation_metrics_during_fit_follow_generation_every_n_epochs(tiny_run: Path) -> None:
    with (tiny_run / "metrics.csv").open() as f:
        validations = [row for row in csv.DictReader(f) if row["val/ppl"]]
    assert [row["epoch"] for row in validations] == ["0", "1"]
    assert [bool(row["val/distinct1"]) for row in validations] == [False, True]
    assert all(row["val/word_ppl"] for row in validations)
    samples = _samples(tiny_run)
    assert len(samples) == 3 and {(s["stage"], s["epoch"]) for s in samples} == {("val", 1)}


def _validate(root: Path, *extra: str) -> Path:
    main(["validate", *QUICKSTART, "--trainer.default_root_dir", str(root), *extra])
    return newest_run(root)


def test_zero_shot_evaluates_the_untouched_base(tmp_path: Path, tiny_run: Path) -> None:
    checkpoint = str(tiny_run / "checkpoints" / "last.ckpt")
    no_checkpoint = _validate(tmp_path, "--model.num_generation_samples", "3")
    switched_off = _validate(tmp_path, "--ckpt_path", checkpoint, "--model.zero_shot", "true", "--model.num_generation_samples", "3")
    fine_tuned = _validate(tmp_path, "--ckpt_path", checkpoint, "--model.num_generation_samples", "0")
    base_ppl = logged_values(no_checkpoint)["val/ppl"]
    assert logged_values(switched_off)["val/ppl"] == pytest.approx(base_ppl, rel=1e-6)
    assert logged_values(fine_tuned)["val/ppl"] != pytest.approx(base_ppl, rel=1e-4)
    assert [s["reply"] for s in _samples(switched_off)] == [s["reply"] for s in _samples(no_checkpoint)]
    assert not (fine_tuned / "samples.jsonl").exists()  # 0 samples: generation is off
    results = {run: json.loads((run / "results.json").read_text()) for run in (no_checkpoint, fine_tuned)}
    assert results[no_checkpoint]["checkpoint"] is None and results[fine_tuned]["checkpoint"] == str(Path(checkpoint).resolve())
    assert results[fine_tuned]["generation_samples"] == 0 and results[no_checkpoint]["generation_samples"] == 3
    assert (results[fine_tuned]["stage"], results[fine_tuned]["split"]) == ("val", "valid")
    assert results[fine_tuned]["metrics"]["val/ppl"] == pytest.approx(logged_values(fine_tuned)["val/ppl"], rel=1e-6)


def test_a_metric_added_in_yaml_appears_in_the_results(tmp_path: Path) -> None:
    config = tmp_path / "metrics.yaml"
    config.write_text(yaml.safe_dump({"model": {"generation_metrics": [
        {"name": "reply_count", "class_path": f"{__name__}.ReplyCount"},
        {"name": "distinct1", "class_path": "empathic_lora.evaluate.metrics.DistinctN", "init_args": {"n": 1}},
    ]}}))
    main(["test", *QUICKSTART, "--config", str(config), "--model.num_generation_samples", "5",
          "--trainer.default_root_dir", str(tmp_path)])
    logged = logged_values(newest_run(tmp_path))
    assert logged["test/reply_count"] == 5
    assert "test/distinct1" in logged and "test/bleu4" not in logged  # the list replaces the defaults


def test_bad_evaluation_settings_give_one_line_errors(tmp_path: Path) -> None:
    result = run_main(main, "test", *QUICKSTART, "--model.generation_metrics", '[{"class_path": "nope.Nope"}]',
                        "--trainer.default_root_dir", str(tmp_path))
    assert_one_line_error(result, "--model.generation_metrics[0]", "nope.Nope")
    with pytest.raises(UserError, match="--model.generation .*max_tokens.* known keys: max_new_tokens"):
        EmpatheticLoRAModule("builtin:tiny-gpt2", random_init=True, generation={"max_tokens": 3})


def test_an_out_of_range_generation_setting_fails_before_training(tmp_path: Path) -> None:
    # transformers would accept these and fail only at the first generation, after training.
    result = run_main(main, "fit", *QUICKSTART, "--model.generation", "{do_sample: true, top_p: 1.5}",
                        "--trainer.default_root_dir", str(tmp_path))
    assert_one_line_error(result, "--model.generation: top_p must be in (0, 1], got 1.5")
    assert not (tmp_path / "lightning_logs").exists()  # refused before a run directory was made
    with pytest.raises(UserError, match=r"--model.generation: num_beams must be >= 1, got 0"):
        EmpatheticLoRAModule("builtin:tiny-gpt2", random_init=True, generation={"num_beams": 0})
    with pytest.raises(UserError, match=r"--model.generation: temperature must be a number, got 'hot'"):
        EmpatheticLoRAModule("builtin:tiny-gpt2", random_init=True, generation={"temperature": "hot"})


def test_the_generation_sample_is_fixed_and_seeded() -> None:
    examples = [Example(str(i), "proud", "", (), f"reply {i}") for i in range(100)]
    first = fixed_sample(examples, 10)
    assert first == fixed_sample(examples, 10) and len(set(map(id, first))) == 10
    assert [e.conv_id for e in first] == sorted((e.conv_id for e in first), key=int)  # split order
    assert first != fixed_sample(examples, 10, seed=1)
    assert fixed_sample(examples, 500) == examples
    assert fixed_sample(examples, ALL) == examples


def test_all_generates_for_every_example_of_the_split(tmp_path: Path) -> None:
    main(["test", *QUICKSTART, "--model.num_generation_samples", "all", "--model.generation", "{max_new_tokens: 4}",
          "--trainer.default_root_dir", str(tmp_path)])
    run = newest_run(tmp_path)
    examples = EmpatheticDialoguesDataModule("builtin:sample").examples("test")
    assert len(examples) > 10  # more than one batch of tiny.yaml's eval_batch_size 8
    samples = _samples(run)
    assert [(s["reference"], s["emotion"]) for s in samples] == [(e.target, e.emotion) for e in examples]  # split order
    results = json.loads((run / "results.json").read_text())
    assert results["generation_samples"] == len(examples)
    assert results["config"]["model"]["num_generation_samples"] == "all"


@pytest.mark.parametrize("value", ["some", "2.5"])  # -1: tests/e2e/test_bad_input.py
def test_a_bad_number_of_generation_samples_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path, value: str) -> None:
    line = train_error(capsys, tmp_path, "--model.num_generation_samples", value)
    assert line.startswith(f"error: --model.num_generation_samples: expected one of NonNegativeInt, 'all', got {value}")


def _walkthrough() -> tuple[dict[str, str], list[str]]:
    """The files and commands of docs/metrics.md's walk-through, exactly as written there."""
    doc = (ROOT / "docs" / "metrics.md").read_text()
    section = doc.split("## Adding a metric, end to end", 1)[1].split("\n## ", 1)[0]
    files, commands = {}, []
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        if language == "bash":
            commands += [line for line in body.splitlines() if line.strip()]
        else:
            name = body.splitlines()[0].removeprefix("# ").strip()
            files[name] = body
    return files, commands


def test_the_docs_walkthrough_runs_as_written(tmp_path: Path) -> None:
    files, commands = _walkthrough()
    assert set(files) == {"my_metrics.py", "my_metrics.yaml"} and len(commands) == 2
    # A copy of the project's entry point and configs: the walk-through's files go next to train.py.
    shutil.copy(ROOT / "train.py", tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "python"
        result = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "test/question_rate" in result.stdout and "test/distinct2" in result.stdout
    logged = logged_values(newest_run(tmp_path / "runs" / "tiny"))
    assert 0 <= logged["test/question_rate"] <= 1 and {"test/ppl", "test/word_ppl"} <= set(logged)
